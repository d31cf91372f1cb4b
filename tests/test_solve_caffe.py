"""The caffe backend on real pycaffe: the shared loop trains the same weights as the torch
engine, inference agrees, classifier weights are transplanted into solver.net.params, a run
resumes across the two backends in both directions, Ctrl-C leaves a snapshot, and infer.py's
output scores as the engine's. Skipped (with the reason) where pycaffe does not import."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from solvers import caffe_backend

if caffe_backend.pycaffe() is None:
    pytest.skip(f"needs real pycaffe: {caffe_backend.unavailable_reason()}",
                allow_module_level=True)

from solvers.data.readers import read_rgb, to_caffe_input  # noqa: E402
from solvers.demo import DemoConfig  # noqa: E402
from solvers.predict import Predictor  # noqa: E402
from solvers.train import train  # noqa: E402

from solve_helpers import (  # noqa: E402
    ROOT, one_thread, tiny_models, tiny_vgg16_classifier, weights)


@pytest.fixture()
def start(tmp_path):
    """A tiny FCN-32s (one training image, so both backends see the same data) and its
    iteration-0 weights, used as the common starting point."""
    solver = tiny_models(tmp_path / "a", iters=(3, 1, 1), config=DemoConfig(train=1, val=1,
                                                                           size=32))[0]
    with one_thread():
        w0 = train(solver, backend="torch", iters=0, test_every=0, progress=False).weights
    shutil.copy(w0, tmp_path / "w0.caffemodel")
    shutil.rmtree(solver.parent / "snapshot")
    return solver, tmp_path / "w0.caffemodel"


def test_caffe_and_torch_train_alike(start, tmp_path):
    solver, w0 = start
    other = tmp_path / "b" / "models" / solver.parent.name
    shutil.copytree(solver.parent.parent.parent, tmp_path / "b", dirs_exist_ok=True)
    with one_thread():
        ours = train(solver, backend="torch", weights=w0, iters=3, test_every=3, progress=False)
    theirs = train(other / "solver.prototxt", backend="caffe", weights=w0, iters=3,
                   test_every=3, progress=False)
    assert theirs.backend == "caffe" and theirs.iter == 3 and theirs.weights.is_file()
    a, b = weights(ours.weights), weights(theirs.weights)
    assert set(a) == set(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5, err_msg=name)
    assert ours.mean_iu == pytest.approx(theirs.mean_iu, abs=0.02)


def test_caffe_inference_matches_torch(start):
    solver, w0 = start
    deploy = solver.parent / "deploy.prototxt"
    data = solver.parent.parent.parent / "data"
    rgb = read_rgb(next((data / "JPEGImages").glob("*.jpg")))
    x = to_caffe_input(rgb, (104.0, 117.0, 123.0))
    ours = Predictor(deploy, w0, "torch").scores(x)
    theirs = Predictor(deploy, w0, "caffe").scores(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


def _env() -> dict[str, str]:
    """The environment of a script run: this process's PYTHONPATH (where pycaffe is found)
    after the repository."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "GLOG_minloglevel": "2"}


@pytest.mark.parametrize("first, second", [("torch", "caffe"), ("caffe", "torch")])
def test_resume_across_backends(tmp_path, first, second):
    """2 iterations on one backend, resumed from its .solverstate for 2 more on the other,
    end where 4 straight iterations on the torch engine end: the files are each other's, the
    iteration, weights and Adam's history carry over, and the data layers go on in order."""
    config = DemoConfig(train=3, val=1, size=32)
    a = tiny_models(tmp_path / "a", iters=(4, 1, 1), config=config)[0]
    b = tiny_models(tmp_path / "b", iters=(4, 1, 1), config=config)[0]
    with one_thread():
        w0 = train(a, backend="torch", iters=0, test_every=0, progress=False).weights
        shutil.copy(w0, tmp_path / "w0.caffemodel")
        straight = train(a, backend="torch", weights=tmp_path / "w0.caffemodel", iters=4,
                         test_every=0, progress=False)
        half = train(b, backend=first, weights=tmp_path / "w0.caffemodel", iters=2,
                     test_every=0, progress=False)
        resumed = train(b, backend=second, resume=half.state, iters=2, test_every=0,
                        progress=False)
    assert (half.iter, resumed.iter) == (2, 4)
    w_a, w_b = weights(straight.weights), weights(resumed.weights)
    moved = weights(tmp_path / "w0.caffemodel")
    for name in w_a:
        for x, y, x0 in zip(w_a[name], w_b[name], moved[name]):
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-4 * np.abs(x).max(), err_msg=name)
            if name == "conv1_1":
                assert np.abs(x - x0).max() > 1e-3 * np.abs(x).max()  # training moved it
    records = [json.loads(line) for line in resumed.metrics_path.read_text().splitlines()]
    assert [(r["phase"], r["iter"], r.get("backend")) for r in records] == [
        ("start", 0, first), ("train", 2, None), ("start", 2, second), ("train", 4, None)]


def test_classifier_weights_into_solver_net_params(tmp_path):
    """--weights with a (legacy-format, width-scaled) VGG16 classifier on pycaffe: transplant
    and bilinear upsampling written into solver.net.params give the engine's weights exactly."""
    from surgery.interp import bilinear_weights

    solvers = {name: tiny_models(tmp_path / name, iters=(1, 1, 1))[0] for name in ("t", "c")}
    path = tmp_path / "VGG16_tiny.caffemodel"
    classifier = tiny_vgg16_classifier(path)
    with one_thread():
        ours = train(solvers["t"], backend="torch", weights=path, iters=0, test_every=0,
                     progress=False)
    theirs = train(solvers["c"], backend="caffe", weights=path, iters=0, test_every=0,
                   progress=False)
    a, b = weights(ours.weights), weights(theirs.weights)
    assert set(a) == set(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)
    np.testing.assert_array_equal(b["fc6"][0].ravel(), classifier.params["fc6"][0].data.ravel())
    w = b["upscore"][0]
    np.testing.assert_array_equal(w, bilinear_weights(w.shape, 1, "upscore"))


def test_ctrl_c_snapshots_and_resumes(tmp_path):
    """SIGINT to `solve.py --backend caffe` mid-training: exit 130 with a snapshot of the
    iteration reached, which `--resume` continues on pycaffe."""
    solver = tiny_models(tmp_path, iters=(100000, 1, 1))[0]
    proc = subprocess.Popen([sys.executable, str(ROOT / "solve.py"), str(solver.parent),
                             "--backend", "caffe", "--quiet", "--test-every", "0"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = solver.parent / "snapshot" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not metrics.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # some iterations
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at iteration" in out + err
    states = sorted((solver.parent / "snapshot").glob("train_iter_*.solverstate"))
    assert len(states) == 1
    reached = int(states[0].stem.rsplit("_", 1)[1])
    assert reached > 0 and (solver.parent / "snapshot" / f"train_iter_{reached}.caffemodel").is_file()
    r = train(solver, backend="caffe", resume=states[0], iters=1, test_every=0, progress=False)
    assert r.iter == reached + 1


def test_infer_caffe_output_scores_as_the_engine(start, tmp_path):
    """`infer.py --backend caffe` writes the engine's label PNGs, and `python -m solvers.score`
    on them gives the engine's figures."""
    solver, w0 = start
    with one_thread():
        trained = train(solver, backend="torch", weights=w0, iters=3, test_every=0,
                        progress=False).weights
    data = solver.parent.parent.parent / "data"
    images = data / "JPEGImages"
    outputs = {}
    for backend in ("caffe", "torch"):
        out = tmp_path / backend
        subprocess.run([sys.executable, str(ROOT / "infer.py"), str(solver.parent),
                        str(trained), str(images), "-o", str(out), "--backend", backend,
                        "--classes", "synthetic", "--quiet"], cwd=tmp_path, env=_env(),
                       check=True, capture_output=True, timeout=120)
        score = subprocess.run([sys.executable, "-m", "solvers.score", str(out),
                                str(data / "SegmentationClass"), "--classes", "6"],
                               cwd=tmp_path, env=_env(), check=True, capture_output=True,
                               text=True, timeout=120)
        outputs[backend] = (sorted(p.name for p in out.glob("*.png")),
                            json.loads((out / "scores" / "scores.json").read_text()), score.stdout)
    assert outputs["caffe"][0] == outputs["torch"][0] and outputs["caffe"][0]
    for name in outputs["caffe"][0]:
        if not name.endswith("_overlay.png"):
            with Image.open(tmp_path / "caffe" / name) as x, Image.open(tmp_path / "torch" / name) as y:
                assert np.array_equal(np.array(x), np.array(y)), name
    assert outputs["caffe"][1] == outputs["torch"][1]
    assert "mean IU" in outputs["caffe"][2]


def test_unusable_gpu_is_one_line_not_an_abort(tmp_path):
    """Caffe aborts the process (glog FATAL) on a GPU it cannot use (a CPU_ONLY build, or no
    such device); solve.py asks a child process first and reports the fatal line."""
    solver = tiny_models(tmp_path, iters=(1, 1, 1))[0]
    proc = subprocess.run([sys.executable, str(ROOT / "solve.py"), str(solver.parent),
                           "--backend", "caffe", "--gpu", "99", "--quiet"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --gpu 99: pycaffe cannot use it ("), \
        proc.stderr
    assert not (solver.parent / "snapshot").exists()
