"""`python -m surgery` and `python surgery/transplant.py`, run as a user would (subprocess)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netgen.fcn import fcn_vgg16
from netgen.schema import write_prototxt
from surgery.caffemodel import Weights, load_weights, save_weights
from surgery.classifiers import vgg16
from surgery.interp import bilinear_weights
from surgery.shapes import net_params

REPO = Path(__file__).resolve().parents[1]
WIDTH = 1 / 16


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def surgery(*args: str) -> subprocess.CompletedProcess:
    return run("-m", "surgery", *map(str, args))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A width-scaled VGG16 classifier (V1 caffemodel) and FCN deploy prototxts."""
    d = tmp_path_factory.mktemp("cli")
    net = vgg16(width=WIDTH)
    rng = np.random.default_rng(0)
    weights = Weights()
    for name, params in net_params(net).items():
        weights[name] = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    save_weights(d / "vgg16.caffemodel", weights, net=net, legacy=True)
    write_prototxt(d / "classifier.prototxt", net)
    for stride in ("32s", "16s"):
        write_prototxt(d / f"fcn{stride}.prototxt", fcn_vgg16("deploy", stride, width=WIDTH))
    write_prototxt(d / "wide.prototxt", fcn_vgg16("deploy", "32s", width=2 * WIDTH))
    return d


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_info(files):
    result = surgery("info", files / "vgg16.caffemodel")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "binary caffemodel, legacy V1 `layers`" in out and "looks like: VGG16 classifier" in out
    assert "fc6      InnerProduct  256x1568, 256" in out
    total = sum(a.size for arrays in load_weights(files / "vgg16.caffemodel").values()
                for a in arrays)
    assert f"16 layers with parameters, {total:,} parameters" in out


def test_convert_round_trip(files, tmp_path):
    source = load_weights(files / "vgg16.caffemodel")
    current, h5, back, v1 = (tmp_path / n for n in ("c.caffemodel", "c.caffemodel.h5",
                                                     "back.caffemodel", "v1.caffemodel"))
    for args in ((files / "vgg16.caffemodel", current), (current, h5),
                 (h5, back, "--net", files / "classifier.prototxt"), (back, v1, "--legacy")):
        result = surgery("convert", *args)
        assert result.returncode == 0, result.stderr
    assert "HDF5 caffemodel" in surgery("info", h5).stdout
    assert load_weights(current).net.layer and load_weights(v1).net.layers
    assert load_weights(back).types["fc6"] == "InnerProduct"  # definitions from --net
    for path in (current, h5, back, v1):
        loaded = load_weights(path)
        for name, arrays in source.items():
            for a, b in zip(arrays, loaded[name]):
                assert np.array_equal(a.reshape(-1).view(np.uint32), b.reshape(-1).view(np.uint32))


def test_transplant_and_interp_commands(files, tmp_path):
    out = tmp_path / "fcn32s.caffemodel"
    result = surgery("transplant", files / "vgg16.caffemodel", "--net", files / "fcn32s.prototxt",
                     "--out", out)
    assert result.returncode == 0, result.stderr
    assert "coerced  fc6[0]                       256x1568 -> 256x32x7x7" in result.stdout
    assert "dropped  fc8[0]" in result.stdout and "init     score_fr[0]" in result.stdout
    assert "bilinear upsampling set in: upscore" in result.stdout
    weights = load_weights(out)
    assert weights.net.layer[1].name == "conv1_1"  # the target's definitions are written along
    assert np.array_equal(weights["upscore"][0], bilinear_weights((21, 21, 64, 64)))
    zeroed = tmp_path / "zeroed.caffemodel"
    weights["upscore"][0][:] = 0
    save_weights(zeroed, weights)
    again = tmp_path / "again.caffemodel"
    assert surgery("interp", zeroed, "--layer", "upscore", "--out", again).returncode == 0
    assert np.array_equal(load_weights(again)["upscore"][0], bilinear_weights((21, 21, 64, 64)))
    assert surgery("interp", zeroed, "--net", files / "fcn32s.prototxt", "--out",
                   again).returncode == 0


def test_expand_score_and_stage_init(files, tmp_path):
    fcn32 = tmp_path / "32s.caffemodel"
    assert surgery("transplant", files / "vgg16.caffemodel", "--net", files / "fcn32s.prototxt",
                   "--out", fcn32).returncode == 0
    wide = tmp_path / "60.caffemodel"
    result = surgery("expand-score", fcn32, "--layer", "score_fr", "--layer", "upscore",
                     "--classes", "60", "--out", wide)
    assert result.returncode == 0, result.stderr
    assert "score_fr: 21x256x1x1 -> 60x256x1x1" in result.stdout
    expanded = load_weights(wide)
    assert expanded["upscore"][0].shape == (60, 60, 64, 64)
    assert expanded.net.layer[-2].convolution_param.num_output == 60
    fcn16 = tmp_path / "16s.caffemodel"
    result = surgery("stage-init", fcn32, "--net", files / "fcn16s.prototxt", "--out", fcn16)
    assert result.returncode == 0, result.stderr
    assert "zero (new scoring layer)" in result.stdout
    assert not load_weights(fcn16)["score_pool4"][0].any()


def test_script_from_a_fresh_clone(files, tmp_path):
    """`python surgery/transplant.py` needs no installation; the default target is the VOC
    FCN-32s under models/ of the clone the script sits in, the default output sits beside the
    source."""
    clone = tmp_path / "clone"
    for package in ("netgen", "surgery"):
        shutil.copytree(REPO / package, clone / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    target = clone / "models" / "voc-fcn32s" / "deploy.prototxt"
    target.parent.mkdir(parents=True)
    shutil.copy(files / "fcn32s.prototxt", target)
    source = tmp_path / "vgg16.caffemodel"
    shutil.copy(files / "vgg16.caffemodel", source)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(clone / "surgery" / "transplant.py"), str(source)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"target: {target}" in result.stdout and "VGG16 classifier" in result.stdout
    written = tmp_path / "vgg16-voc-fcn32s.caffemodel"
    assert f"wrote {written}" in result.stdout
    assert load_weights(written)["fc6"][0].shape == (256, 32, 7, 7)


# ------------------------------------------------------------------------ bad input

def _no_new_files(folder: Path, before: set[Path]) -> None:
    assert set(folder.iterdir()) == before


def test_bad_input(files, tmp_path):
    model = files / "vgg16.caffemodel"
    truncated = tmp_path / "cut.caffemodel"
    truncated.write_bytes(model.read_bytes()[:-1000])
    prototxt = files / "fcn32s.prototxt"
    out = tmp_path / "out.caffemodel"
    before = set(tmp_path.iterdir())
    cases = [
        (("info", truncated), ("cut.caffemodel", "truncated")),
        (("transplant", truncated, "--net", prototxt, "--out", out), ("truncated",)),
        (("transplant", prototxt, "--net", prototxt, "--out", out),
         ("fcn32s.prototxt", "text file (a prototxt?)")),
        (("interp", model, "--layer", "nope", "--out", out), ("layer 'nope'", "no weights")),
        (("transplant", model, "--net", files / "wide.prototxt", "--out", out),
         ("layer 'conv1_1' param 0", "4x3x3x3", "8x3x3x3")),
        (("transplant", model, "--net", prototxt, "--out", tmp_path / "missing" / "o.caffemodel"),
         ("missing", "does not exist")),
        (("convert", model, tmp_path / "o.h5", "--legacy"), ("legacy V1",)),
        (("convert", model, out, "--legacy", "--net", prototxt), ("'Crop' has no legacy V1",)),
        (("convert", model, out, "--net", prototxt), ("no layer named 'fc8'",)),
        (("convert", tmp_path / "absent.caffemodel", out), ("absent.caffemodel", "no such file")),
        (("expand-score", model, "--layer", "fc8", "--classes", "0", "--out", out),
         ("must be positive",)),
        (("stage-init", model, "--net", tmp_path / "nonet.prototxt", "--out", out),
         ("nonet.prototxt",)),
        (("interp", model, "--out", out), ("--layer",)),
    ]
    for args, fragments in cases:
        assert_user_error(surgery(*args), *fragments)
        _no_new_files(tmp_path, before)
    assert surgery().returncode == 2  # usage error from argparse
