"""Tiled inference: windows placed by netgen.field's reach of `score` give the whole-image
scores; the reach itself is checked against the net by perturbing one input pixel."""
from __future__ import annotations

import numpy as np
import pytest

from netgen.errors import FcnkitError
from netgen.field import reach
from netgen.schema import read_net
from solvers.data.readers import to_caffe_input
from solvers.predict import Predictor
from solvers.tiles import spans

from solve_helpers import one_thread, random_fcn8s

MEAN = (104.0, 117.0, 123.0)


@pytest.fixture(scope="module")
def fcn8s(tmp_path_factory):
    """A width-1/16 FCN-8s deploy net (6 classes) with random weights."""
    return random_fcn8s(tmp_path_factory.mktemp("tiles"), np.random.default_rng(0))


def test_reach_of_the_reference_nets():
    """FCN's pad 100 and crops place every score pixel's input interval; windows align on the
    stride-32 grid of pool5."""
    r = reach(read_net("models/voc-fcn8s/deploy.prototxt"), "data", "score")
    assert (r.scale, r.before, r.after, r.period) == ((1, 1), (245, 245), (245, 245), (32, 32))
    pool5 = reach(read_net("models/voc-fcn32s/deploy.prototxt"), "data", "pool5")
    assert (pool5.scale, pool5.lo, pool5.hi) == ((32, 32), (-189, -189), (22, 22))
    assert reach(read_net("models/voc-fcn32s/deploy.prototxt"), "data", "score").before == (
        233, 233)
    two = read_net("models/nyud-fcn32s-color-hha/deploy.prototxt")  # colour + HHA streams
    assert reach(two, ["color", "hha"], "score").before == (233, 233)
    with pytest.raises(FcnkitError, match="score_fused .*joins the input with a blob not made"):
        reach(two, "color", "score")


def test_reach_bounds_what_a_pixel_changes(fcn8s):
    """Changing input row x changes exactly score rows within [x - after, x + before]; the
    bound is tight to within the period."""
    deploy, weights = fcn8s
    r = reach(read_net(deploy), "data", "score")
    rng = np.random.default_rng(1)
    x = rng.normal(0, 50, (3, 640, 24)).astype(np.float32)
    with one_thread():
        p = Predictor(deploy, weights)
        base = p.scores(x)
        x[:, 320, :] += 500
        changed = np.flatnonzero(np.abs(p.scores(x) - base).max(axis=(0, 2)) > 0)
    assert 320 - r.after[0] <= changed[0] < 320 - r.after[0] + r.period[0]
    assert 320 + r.before[0] - r.period[0] < changed[-1] <= 320 + r.before[0]


@pytest.mark.parametrize("shape", [(760, 96), (96, 760)])
def test_tiled_labels_equal_whole_image_labels(fcn8s, shape):
    """Windows of at most 700 pixels (4 along the long side) stitch to the whole-image score:
    same argmax everywhere, scores equal to float rounding."""
    deploy, weights = fcn8s
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[:, :, 1] = np.linspace(0, 255, shape[0])[:, None]  # structure across the seams
    with one_thread():
        p = Predictor(deploy, weights)
        assert len(p.tiler.tiles(*shape, 700)) == 4
        chw = to_caffe_input(rgb, MEAN)
        whole = p.scores(chw)
        tiled = p.tiler.scores(p.scores, chw, 700)
        labels = p.labels(rgb, MEAN, tile=700)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    np.testing.assert_array_equal(labels, whole.argmax(0))
    np.testing.assert_array_equal(tiled.argmax(0), whole.argmax(0))
    assert p.num_classes == 6


def test_spans_cover_the_axis_with_aligned_windows_within_the_tile():
    for size, tile in ((1000, 600), (3000, 1024), (5000, 2000), (600, 600)):
        parts = spans(size, tile, 245, 245, 32)
        assert parts[0].keep == 0 and parts[-1].keep_stop == size
        for a, b in zip(parts, parts[1:]):
            assert a.keep_stop == b.keep
        for s in parts:
            assert s.stop - s.start <= tile and s.start % 32 == 0
            assert s.start == 0 or s.keep - s.start >= 245
            assert s.stop == size or s.stop - s.keep_stop >= 245


def test_a_tile_too_small_for_the_net_is_refused():
    with pytest.raises(FcnkitError, match="--tile 500: too small.*at least 533"):
        spans(1000, 500, 245, 245, 32)


def test_infer_tile_option(fcn8s, tmp_path, capsys):
    """infer.py --tile 700 writes the labels --tile 0 (whole image) writes; a tile too small
    for the net is one error line and no output."""
    import infer
    from PIL import Image

    deploy, weights = fcn8s
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (96, 760, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    outs = {}
    with one_thread():
        for tile in (0, 700):
            outs[tile] = tmp_path / f"tile{tile}"
            assert infer.main([str(deploy), str(weights), str(tmp_path / "a.png"), "-o",
                               str(outs[tile]), "--tile", str(tile), "--quiet"]) == 0
        with pytest.raises(SystemExit) as e:
            infer.main([str(deploy), str(weights), str(tmp_path / "a.png"), "-o",
                        str(tmp_path / "small"), "--tile", "100", "--quiet"])
    assert e.value.code == 2 and "--tile 100: too small" in capsys.readouterr().err
    assert not (tmp_path / "small").exists()
    whole, tiled = (np.array(Image.open(outs[t] / "a.png")) for t in (0, 700))
    np.testing.assert_array_equal(tiled, whole)


@pytest.mark.parametrize("layers, pattern", [
    ('layer { name: "n" type: "MVN" bottom: "c" top: "score" }', "reads the whole image"),
    ('layer { name: "p" type: "Pooling" bottom: "c" top: "score" '
     'pooling_param { pool: AVE global_pooling: true } }', "global pooling"),
    ('layer { name: "p" type: "Pooling" bottom: "c" top: "score" '
     'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }', "not at the input's resolution"),
])
def test_nets_that_cannot_be_tiled_are_named(layers, pattern):
    from netgen.proto import caffe_pb2
    from netgen.schema import parse_prototxt
    from solvers.tiles import Tiler

    net = parse_prototxt(
        'layer { name: "data" type: "Input" top: "data" '
        'input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } } } '
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        'convolution_param { num_output: 2 kernel_size: 3 pad: 1 } } ' + layers,
        caffe_pb2.NetParameter)
    with pytest.raises(FcnkitError, match=pattern):
        Tiler(net, "data", "score")
