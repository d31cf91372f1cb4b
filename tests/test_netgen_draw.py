"""`python -m netgen draw`: the DOT graph (layers, windows, output sizes, crop offsets) and its
rendering through graphviz's `dot`."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netgen.draw import INSTALL_DOT, draw, to_dot
from netgen.errors import FcnkitError
from netgen.schema import read_net
from test_netgen_cli import REPO, assert_user_error, netgen

MODELS = REPO / "models"
HAS_DOT = shutil.which("dot") is not None


def _nodes(source: str) -> dict[str, str]:
    """Node label by layer name (the first label line)."""
    return {m[2].split("\\n")[0]: m[2] for m in re.finditer(r'(\w+) \[label="([^"]*)"', source)}


def test_fcn8s_graph_at_500x500():
    source = to_dot(read_net(MODELS / "voc-fcn8s" / "deploy.prototxt"), (500, 500)).source
    nodes = _nodes(source)
    # windows and output sizes (FCN-8s on a 500x500 image: 100 px padding, fc7 16x16)
    assert nodes["conv1_1"] == "conv1_1\\nConvolution\\nk3 s1 p100\\n+ ReLU\\n1x64x698x698"
    assert nodes["pool5"] == "pool5\\nPooling\\nk2 s2\\n1x512x22x22"
    assert nodes["fc6"] == "fc6\\nConvolution\\nk7 s1\\n+ ReLU\\n1x4096x16x16"
    assert nodes["upscore2"] == "upscore2\\nDeconvolution\\nk4 s2\\n1x21x34x34"
    assert nodes["upscore8"] == "upscore8\\nDeconvolution\\nk16 s8\\n1x21x568x568"
    assert nodes["score"] == "score\\nCrop\\n1x21x500x500"
    assert "relu1_1" not in nodes  # in-place layers live in the box they modify
    # the reference crop offsets on the edges into the Crop layers (5, 9, 31)
    crops = re.findall(r'label="crop (\d+)"', source)
    assert sorted(map(int, crops)) == [5, 9, 31]
    assert source.count("style=dashed") == 3  # the reference (size) input of each Crop


def test_declared_size_and_a_crop_the_coord_map_disagrees_with():
    net = read_net(MODELS / "voc-fcn32s" / "deploy.prototxt")
    assert "1x21x500x500" in _nodes(to_dot(net).source)["score"]  # the Input's own shape
    (crop,) = [layer for layer in net.layer if layer.type == "Crop"]
    crop.crop_param.offset[:] = [18]
    source = to_dot(net, (224, 224)).source
    assert 'label="crop 18\\n(coord map: 19)"' in source
    with pytest.raises(FcnkitError, match="declares no input shape; give one with --size"):
        to_dot(read_net(MODELS / "voc-fcn32s" / "train.prototxt"), phase="TRAIN")


def test_dot_text_needs_no_graphviz_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on the PATH
    net = read_net(MODELS / "voc-fcn32s" / "deploy.prototxt")
    out = draw(net, tmp_path / "net.dot", (500, 500))
    assert out.read_text().startswith("digraph") and 'label="crop 19"' in out.read_text()
    with pytest.raises(FcnkitError, match=re.escape(INSTALL_DOT)):
        draw(net, tmp_path / "net.png")
    assert not (tmp_path / "net.png").exists()
    with pytest.raises(FcnkitError, match=r"write \.svg, \.png, \.pdf, \.dot"):
        draw(net, tmp_path / "net.jpg")


def test_missing_dot_is_one_line_naming_the_install(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": str(tmp_path)}  # no `dot` there
    r = subprocess.run([sys.executable, "-m", "netgen", "draw",
                        str(MODELS / "voc-fcn32s" / "deploy.prototxt"), str(tmp_path / "n.svg")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert_user_error(r, "voc-fcn32s/deploy.prototxt", "apt-get install graphviz")
    assert not (tmp_path / "n.svg").exists()


@pytest.mark.skipif(not HAS_DOT, reason="graphviz's `dot` is not installed "
                    "(apt-get install graphviz; .ci/run installs it)")
def test_render_svg_and_png(tmp_path):
    svg, png = tmp_path / "fcn16s.svg", tmp_path / "fcn16s.png"
    deploy = MODELS / "voc-fcn16s" / "deploy.prototxt"
    r = netgen("draw", deploy, svg, "--size", "375x500")
    assert r.returncode == 0, r.stderr
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "crop 5" in text and "crop 27" in text and "1x21x375x500" in text
    assert netgen("draw", deploy, png).returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
