"""The caffe backend on real pycaffe: the shared loop trains the same weights as the torch
engine, and inference agrees. Skipped (with the reason) where pycaffe is not installed."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

caffe = pytest.importorskip(
    "caffe", reason="pycaffe is not installed: the caffe backend needs BVLC Caffe's Python "
    "interface (build Caffe with it and add caffe/python to PYTHONPATH)")

from solvers.data.readers import read_rgb, to_caffe_input  # noqa: E402
from solvers.demo import DemoConfig  # noqa: E402
from solvers.predict import Predictor  # noqa: E402
from solvers.train import train  # noqa: E402

from solve_helpers import one_thread, tiny_models, weights  # noqa: E402


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
