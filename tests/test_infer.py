"""infer.py: label PNGs and overlays from a deploy net; fcnkit's engine and OpenCV's Caffe
importer agree on the labels; bad input is one error line and no output folder."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

import infer
from netgen.writer import generate
from solvers.data.readers import to_caffe_input
from solvers.engine import Net
from solvers.palette import voc_palette
from solvers.predict import Predictor

from solve_helpers import files_under, one_thread, random_fcn8s, run_script

HAS_CAFFE = importlib.util.find_spec("caffe") is not None
MEAN = (104.0, 117.0, 123.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A width-1/16 FCN-8s deploy net (6 classes) with random weights, and three images."""
    folder = tmp_path_factory.mktemp("infer")
    rng = np.random.default_rng(0)
    deploy, weights = random_fcn8s(folder, rng)
    images = folder / "images"
    images.mkdir()
    for i, (h, w) in enumerate(((40, 56), (33, 33), (64, 48))):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"img{i}.png")
    return deploy, weights, images


def _labels(folder):
    return {p.stem: np.array(Image.open(p)) for p in sorted(folder.glob("img?.png"))}


def test_torch_and_opencv_agree(model, tmp_path):
    deploy, weights, images = model
    outs = {}
    with one_thread():
        for backend in ("torch", "opencv"):
            outs[backend] = tmp_path / backend
            assert infer.main([str(deploy), str(weights), str(images), "-o", str(outs[backend]),
                               "--backend", backend, "--mean", ",".join(map(str, MEAN)),
                               "--quiet"]) == 0
        ours, theirs = _labels(outs["torch"]), _labels(outs["opencv"])
        assert set(ours) == {"img0", "img1", "img2"} == set(theirs)
        torch_net = Predictor(deploy, weights, "torch")
        for name, label in ours.items():
            rgb = np.array(Image.open(images / f"{name}.png"))
            assert label.shape == rgb.shape[:2]
            # where the two best classes are not within rounding of each other, labels agree
            scores = torch_net.scores(to_caffe_input(rgb, MEAN))
            top2 = np.sort(scores, axis=0)[-2:]
            clear = (top2[1] - top2[0]) > 1e-4 * np.abs(scores).max()
            assert clear.mean() > 0.99
            np.testing.assert_array_equal(label[clear], theirs[name][clear])
            np.testing.assert_array_equal(label, scores.argmax(0))
            assert len(np.unique(label)) > 1


def test_outputs_are_palette_pngs_and_overlays(model, tmp_path):
    deploy, weights, images = model
    out = tmp_path / "out"
    with one_thread():
        infer.main([str(deploy.parent), str(weights), str(images / "img0.png"), "-o", str(out),
                    "--classes", "synthetic", "--quiet"])
    with Image.open(out / "img0.png") as im:
        assert im.mode == "P" and im.size == (56, 40)
        assert np.array_equal(np.array(im.getpalette()[:3 * 6]).reshape(6, 3), voc_palette(6))
    with Image.open(out / "img0_overlay.png") as im:
        assert im.mode == "RGB" and im.height >= 40 and im.width > 56  # legend beside it
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img0_overlay.png"]


def test_scores_scale_with_the_mean(model):
    """The transform subtracts the mean in BGR order: a uniform image equal to the mean
    gives the net all-zero input."""
    deploy, weights, _ = model
    with one_thread():
        p = Predictor(deploy, weights, "torch")
        rgb = np.zeros((32, 32, 3), dtype=np.uint8) + np.array([30, 20, 10], dtype=np.uint8)
        a = p.scores(to_caffe_input(rgb, (10, 20, 30)))
        b = p.scores(np.zeros((3, 32, 32), dtype=np.float32))
    np.testing.assert_allclose(a, b, rtol=0, atol=0)


def _fails(capsys, argv, pattern, out):
    with pytest.raises(SystemExit) as e:
        infer.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert pattern in err, err
    assert not out.exists(), "a failed run must not create the output folder"


@pytest.mark.parametrize("change,pattern", [
    ({"deploy": "{tmp}/none.prototxt"}, "none.prototxt: no such file"),
    ({"weights": "{tmp}/none.caffemodel"}, "none.caffemodel: no such file"),
    ({"images": "{tmp}/none.jpg"}, "none.jpg: no such image file or folder"),
    ({"images": "{tmp}/fake.jpg"}, "cannot be read as an image"),
    ({"images": "{tmp}/empty"}, "holds no images"),
    ({"extra": ["--backend", "onnx"]}, "unknown backend 'onnx'"),
    ({"extra": ["--mean", "1,2"]}, "--mean"),
    ({"extra": ["--classes", "klingon"]}, "--classes"),
    ({"extra": ["--classes", "voc"]}, "has 21 names, not 6"),
    ({"extra": ["--output", "prob"]}, "no blob 'prob'"),
    ({"extra": ["--alpha", "2"]}, "--alpha"),
    ({"weights": "{tmp}/other.caffemodel"}, "layer 'conv1_1'"),
])
def test_bad_input(model, tmp_path, capsys, change, pattern):
    deploy, weights, images = model
    (tmp_path / "fake.jpg").write_text("not an image")
    (tmp_path / "empty").mkdir()
    if "other.caffemodel" in change.get("weights", ""):  # a wider net's weights
        other = generate("synthetic-fcn8s", tmp_path / "m", width=1 / 8) / "deploy.prototxt"
        Net(str(other), "TEST").save(tmp_path / "other.caffemodel")
    args = {"deploy": str(deploy), "weights": str(weights), "images": str(images)}
    args.update({k: v.format(tmp=tmp_path) for k, v in change.items() if k != "extra"})
    out = tmp_path / "out"
    argv = [args["deploy"], args["weights"], args["images"], "-o", str(out), "--quiet",
            *change.get("extra", [])]
    with one_thread():
        _fails(capsys, argv, pattern, out)


@pytest.mark.skipif(HAS_CAFFE, reason="pycaffe is installed: the caffe backend is available")
def test_caffe_backend_without_pycaffe(model, tmp_path, capsys):
    deploy, weights, images = model
    _fails(capsys, [str(deploy), str(weights), str(images), "-o", str(tmp_path / "out"),
                    "--backend", "caffe"], "needs pycaffe", tmp_path / "out")


def test_script_runs_as_a_command(model, tmp_path):
    deploy, weights, images = model
    proc = run_script("infer.py", str(deploy), str(weights), str(images / "img1.png"),
                      "-o", "preds", "--backend", "opencv", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1 label maps" in proc.stdout
    assert {p.name for p in files_under(tmp_path / "preds")} == {"img1.png", "img1_overlay.png"}
