"""Staged training through the real code path: 32s -> 16s -> 8s weights hand-over, classifier
transplant, bilinear upsampling init, resume, snapshots and metrics."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from netgen.errors import FcnkitError
from solvers.stages import parse_stages, run_stages, stage_solvers
from solvers.solver_files import read_solver_files
from solvers.train import train
from surgery.interp import bilinear_weights

from solve_helpers import TINY, one_thread, tiny_models, tiny_vgg16_classifier, weights

# Layers each stage adds over the previous one: score layers and upsamplers.
NEW_16S = {"score_pool4", "upscore2", "upscore16"}
NEW_8S = {"score_pool3", "upscore_pool4", "upscore8"}
UPSAMPLERS = {"upscore", "upscore2", "upscore16", "upscore_pool4", "upscore8"}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """32s trained 2 iterations, 16s 2 iterations, 8s 0 iterations (its snapshot at iteration
    0 is exactly the weights the stage started from)."""
    folder = tmp_path_factory.mktemp("staged")
    solvers = tiny_models(folder, iters=(2, 2, 1))
    with one_thread():
        results = run_stages(solvers, iters=[2, 2, 0], backend="torch", test_every=0,
                             progress=False)
    return solvers, results


def _assert_bilinear(arrays, name):
    w = arrays[name][0]
    np.testing.assert_array_equal(w, bilinear_weights(w.shape, 1, name), err_msg=name)


def test_16s_starts_from_32s_final_weights(staged):
    solvers, (r32, r16, _) = staged
    w32 = weights(r32.weights)
    init16 = weights(r16.weights.parent / "init-from-synthetic-fcn32s.caffemodel")
    for name, arrays in w32.items():
        if name == "upscore":  # 32s's upsampler has no counterpart in 16s
            assert name not in init16
            continue
        for a, b in zip(arrays, init16[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for i, blob in enumerate(init16["score_pool4"]):
        assert not blob.any(), f"score_pool4 blob {i} must start at zero"
    for name in ("upscore2", "upscore16"):
        _assert_bilinear(init16, name)
    assert set(init16) == set(w32) - {"upscore"} | NEW_16S


def test_16s_training_really_loaded_the_stage_init(staged):
    """What the solver trained from is the init file: the 32s trunk, not its own fillers.
    The 16s snapshot after 2 iterations stays close to the 32s weights (Adam moves each
    weight by about lr per step) while its own MSRA init would be far away."""
    _, (r32, r16, _) = staged
    w32, w16 = weights(r32.weights), weights(r16.weights)
    lr = TINY.base_lr[1]
    for name in ("conv1_1", "conv3_1", "fc6", "score_fr"):
        step = np.abs(w16[name][0] - w32[name][0]).max()
        assert 0 < step <= 2 * 1.5 * lr, (name, step)


def test_8s_starts_from_16s_final_weights(staged):
    _, (_, r16, r8) = staged
    w16, w8 = weights(r16.weights), weights(r8.weights)
    assert r8.iter == 0 and r8.weights.name == "train_iter_0.caffemodel"
    for name, arrays in w16.items():
        if name == "upscore16":
            assert name not in w8
            continue
        for a, b in zip(arrays, w8[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert w16["score_pool4"][0].any(), "16s training moved score_pool4 off zero"
    assert not w8["score_pool3"][0].any() and not w8["score_pool3"][1].any()
    for name in ("upscore_pool4", "upscore8", "upscore2"):
        _assert_bilinear(w8, name)
    assert set(w8) == set(w16) - {"upscore16"} | NEW_8S


def test_snapshots_and_metrics_of_each_stage(staged):
    solvers, results = staged
    for solver, r, n in zip(solvers, results, (2, 2, 0)):
        snap = solver.parent / "snapshot"
        assert r.weights == snap / f"train_iter_{n}.caffemodel" and r.weights.is_file()
        assert r.state == snap / f"train_iter_{n}.solverstate" and r.state.is_file()
        assert r.metrics_path == snap / "metrics.jsonl"
    start, record = map(json.loads, results[0].metrics_path.read_text().splitlines())
    assert start == {"stage": "synthetic-fcn32s", "phase": "start", "iter": 0,
                     "backend": "torch", "from": "scratch", "elapsed_s": start["elapsed_s"]}
    assert record["stage"] == "synthetic-fcn32s" and record["phase"] == "train"
    assert json.loads(results[1].metrics_path.read_text().splitlines()[0])["from"].endswith(
        "init-from-synthetic-fcn32s.caffemodel")


def test_from_scratch_stage_gets_bilinear_upsampling(tmp_path):
    """No weights: the Deconvolution layers are set bilinear (their prototxt has no filler)."""
    solver = tiny_models(tmp_path, iters=(1, 1, 1))[0]
    with one_thread():
        r = train(solver, backend="torch", iters=0, test_every=0, progress=False)
    _assert_bilinear(weights(r.weights), "upscore")


def test_classifier_weights_are_transplanted(tmp_path):
    """A (width-scaled, legacy-format) VGG16 classifier caffemodel: convolutions copied,
    fc6/fc7 reshaped into convolutions, the FCN's own layers left to their init."""
    solver = tiny_models(tmp_path, iters=(1, 1, 1))[0]
    path = tmp_path / "VGG16_tiny.caffemodel"
    source = tiny_vgg16_classifier(path).to_weights()
    with one_thread():
        r = train(solver, backend="torch", weights=path, iters=0, test_every=0, progress=False)
    out = weights(r.weights)
    for name in ("conv1_1", "conv5_3"):
        np.testing.assert_array_equal(out[name][0], source[name][0])
    for name in ("fc6", "fc7"):
        np.testing.assert_array_equal(out[name][0], source[name][0].reshape(out[name][0].shape))
        np.testing.assert_array_equal(out[name][1], source[name][1])
    assert out["fc6"][0].shape == (256, 32, 7, 7)
    assert not out["score_fr"][0].any()  # fc8 does not fit the 6-class score layer: own init
    _assert_bilinear(out, "upscore")
    assert (solver.parent / "snapshot" / "VGG16_tiny-fcn.caffemodel").is_file()


DROPOUT = """layer {{
  name: "drop{i}"
  type: "Dropout"
  bottom: "fc{i}"
  top: "fc{i}"
  dropout_param {{ dropout_ratio: 0.5 }}
}}
"""


def _randomized_model(folder, batch_size: int, iter_size: int, mirror: bool):
    """The tiny FCN-32s on 5 training images in seeded random order, with dropout after fc6
    and fc7 (the scratch recipe has none), the batch and iter_size given, mirroring if asked."""
    from solvers.demo import DemoConfig

    solver = tiny_models(folder, iters=(6, 1, 1), config=DemoConfig(train=5, val=1, size=32))[0]
    net = solver.parent / "train.prototxt"
    q = "\\'"  # the prototxt string escapes the param_str's quotes
    old = f"{q}batch_size{q}: 1}}"
    text = net.read_text()
    assert text.count(old) == 1
    text = text.replace(old, f"{q}batch_size{q}: {batch_size}, {q}mirror{q}: {mirror}}}")
    for i in (6, 7):
        relu = (f'layer {{\n  name: "relu{i}"\n  type: "ReLU"\n  bottom: "fc{i}"\n'
                f'  top: "fc{i}"\n}}\n')
        assert relu in text
        text = text.replace(relu, relu + DROPOUT.format(i=i))
    net.write_text(text)
    settings = solver.read_text()
    assert settings.count("iter_size: 1") == 1
    solver.write_text(settings.replace("iter_size: 1", f"iter_size: {iter_size}"))
    return solver


@pytest.mark.parametrize("batch_size, iter_size, mirror", [(1, 1, False), (2, 2, True)])
def test_resume_continues_exactly(tmp_path, batch_size, iter_size, mirror):
    """3 + 3 iterations with a resume in between equal 6 straight, bit for bit, on a randomized
    multi-image split with dropout (and mirroring): the data layers go on with the items and
    augmentation draws the straight run sees next, dropout masks are seeded per iteration;
    metrics.jsonl keeps the records of both runs."""
    a = _randomized_model(tmp_path / "a", batch_size, iter_size, mirror)
    b = _randomized_model(tmp_path / "b", batch_size, iter_size, mirror)
    with one_thread():
        straight = train(a, backend="torch", iters=6, test_every=0, progress=False)
        first = train(b, backend="torch", iters=3, test_every=0, progress=False)
        resumed = train(b, backend="torch", iters=3, resume=first.state, progress=False,
                        test_every=0)
    assert (first.iter, resumed.iter) == (3, 6)
    w_a, w_b = weights(straight.weights), weights(resumed.weights)
    for name in w_a:
        for x, y in zip(w_a[name], w_b[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)
    records = [json.loads(line) for line in resumed.metrics_path.read_text().splitlines()]
    assert [(r["phase"], r["iter"]) for r in records] == [
        ("start", 0), ("train", 3), ("start", 3), ("train", 6)]
    assert records[2]["from"] == str(first.state)


def test_test_records_carry_the_segmentation_scores(tmp_path):
    solver = tiny_models(tmp_path, iters=(2, 1, 1))[0]
    with one_thread():
        r = train(solver, backend="torch", iters=2, test_every=1, progress=False)
    tests = [json.loads(line) for line in r.metrics_path.read_text().splitlines()
             if json.loads(line)["phase"] == "test"]
    assert [t["iter"] for t in tests] == [1, 2]
    last = tests[-1]
    assert set(last) >= {"pixel_acc", "mean_acc", "mean_iu", "fw_iu", "per_class_iu", "loss",
                         "head", "n_pixels"}
    assert last["head"] == "score" and len(last["per_class_iu"]) == 6
    assert last["mean_iu"] == pytest.approx(r.mean_iu)
    assert 0 <= last["pixel_acc"] <= 1 and last["n_pixels"] > 0


@pytest.mark.parametrize("text", ["", "32", "32s,32s", "8s,16s", "32s,,8s", "fcn32s"])
def test_bad_stage_lists(text):
    with pytest.raises(FcnkitError, match="--stages"):
        parse_stages(text)


def test_stage_folders_are_derived_and_checked(tmp_path):
    solvers = tiny_models(tmp_path, iters=(1, 1, 1))
    assert stage_solvers(solvers[0].parent, ["32s", "16s", "8s"]) == solvers
    assert stage_solvers(solvers[2].parent, ["16s", "8s"]) == solvers[1:]
    shutil.rmtree(solvers[1].parent)
    with pytest.raises(FcnkitError, match="synthetic-fcn16s"):
        stage_solvers(solvers[0].parent, ["32s", "16s", "8s"])
    atonce = tmp_path / "models" / "synthetic-fcn8s-atonce"
    shutil.copytree(solvers[2].parent, atonce)
    with pytest.raises(FcnkitError, match="at-once"):
        stage_solvers(atonce, ["32s", "16s", "8s"])


def test_weights_and_resume_together_are_refused(tmp_path):
    solver = tiny_models(tmp_path, iters=(1, 1, 1))[0]
    w = tmp_path / "w.caffemodel"
    w.write_bytes(b"")
    with pytest.raises(FcnkitError, match="not both"):
        train(solver, weights=w, resume=w, progress=False)
    assert not (solver.parent / "snapshot").exists()


def test_solver_files_resolve_beside_the_solver(tmp_path):
    solver = tiny_models(tmp_path, iters=(1, 1, 1))[0]
    files = read_solver_files(solver)
    assert files.snapshot_prefix == solver.parent / "snapshot" / "train"
    assert files.weights_file(7) == solver.parent / "snapshot" / "train_iter_7.caffemodel"
