"""The field cases of ../shared/field-cases/README.md (copied into tests/field_cases/): each
situation FCN users hit with Caffe, and the right behaviour fcnkit gives for it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netgen.errors import FcnkitError
from netgen.schema import read_net
from netgen.writer import generate
from solvers.engine import Net
from solvers.train import train
from surgery.caffemodel import Weights
from surgery.interp import bilinear_weights, interp, upsample_filt

CASES = Path(__file__).parent / "field_cases"


# ---- case 1: reference recipe trained without weights ----

def _reference_fcn32s(folder: Path) -> Path:
    """`netgen generate synthetic-fcn32s --width 0.015625` (the reference recipe: no fillers),
    on 4 synthetic 32x32 images to keep it fast."""
    data = {"size": (32, 32), "length": 4}
    return generate("synthetic-fcn32s", folder, width=0.015625, train_params=data,
                    val_params=data) / "solver.prototxt"


def test_reference_recipe_without_weights_is_refused_before_iteration_1(tmp_path, capsys):
    import solve

    solver = _reference_fcn32s(tmp_path)
    with pytest.raises(SystemExit) as e:
        solve.main([str(solver.parent), "--iters", "40", "--test-every", "20", "--quiet"])
    assert e.value.code == 2
    msg = capsys.readouterr().err
    assert "all 16 learnable layers start at zero (no --weights" in msg
    assert "--weights with an ImageNet classifier" in msg and "--recipe scratch" in msg
    assert "--allow-zero-init" in msg
    assert not (solver.parent / "snapshot").exists()  # stopped before iteration 1


def test_zero_init_override_trains_and_warns_of_flat_loss(tmp_path, capsys):
    solver = _reference_fcn32s(tmp_path)
    r = train(solver, iters=20, test_every=0, progress=False, allow_zero_init=True,
              backend="torch")
    assert r.iter == 20
    err = capsys.readouterr().err  # a warning line on stderr, as the data set warnings
    assert "warning:" in err
    assert "loss has stayed at ln(classes) per pixel for the first 20 iterations" in err


# ---- case 2: Accuracy with out-of-range labels ----

def _accuracy_net(ignore: int | None = None) -> Net:
    net = read_net(CASES / "accuracy-label-255.prototxt")
    if ignore is not None:
        net.layer[-1].accuracy_param.ignore_label = ignore
    return Net(net, "TEST")


def test_accuracy_refuses_label_255_without_ignore_label():
    """Caffe's Accuracy DCHECKs 0 <= label < C; fcnkit refuses instead of clamping to C-1."""
    score = np.array([[[[0, 0, 0, 0]], [[1, 1, 1, 1]]]], np.float32)  # class 1 everywhere
    label = np.full((1, 1, 1, 4), 255, np.float32)
    with pytest.raises(FcnkitError, match=r"layer 'acc' \(Accuracy\): label 255 outside "
                                          r"\[0, 2\) \(no ignore_label set\)"):
        _accuracy_net().forward(score=score, label=label)
    label[0, 0, 0, 0] = 1
    out = _accuracy_net(ignore=255).forward(score=score, label=label)
    assert float(out["acc"]) == 1.0 and out["per_class"].tolist() == [0.0, 1.0]
    label[0, 0, 0, 1] = -1
    with pytest.raises(FcnkitError, match="label -1 outside"):
        _accuracy_net(ignore=255).forward(score=score, label=label)


def test_accuracy_ties_go_against_the_label():
    """accuracy_layer.cpp counts every class scoring >= the label's (the label itself too,
    from -1): all-zero scores, as from an untrained zero net, are accuracy 0, not 1."""
    out = _accuracy_net().forward(score=np.zeros((1, 2, 1, 4), np.float32),
                                  label=np.array([0, 1, 0, 1], np.float32).reshape(1, 1, 1, 4))
    assert float(out["acc"]) == 0.0 and out["per_class"].tolist() == [0.0, 0.0]


# ---- case 4: bilinear upsampling, grouped vs full ----

def test_interp_grouped_and_full_deconvolution_upsample_alike():
    net = read_net(CASES / "deconv-group-vs-full-k3.prototxt")
    engine = Net(net, "TEST")
    weights = Weights((name, [engine.params[name][0].data.copy()])
                      for name in ("up_group", "up_full"))
    assert interp(weights, net) == ["up_group", "up_full"]
    for name in weights:
        engine.params[name][0].data = weights[name][0]
    x = np.random.default_rng(0).standard_normal((1, 4, 5, 5)).astype(np.float32)
    out = engine.forward(x=x)
    np.testing.assert_allclose(out["up_group"], out["up_full"], atol=1e-6)
    k = weights["up_group"][0][0, 0]
    np.testing.assert_array_equal(k, np.outer([.5, 1, .5], [.5, 1, .5]))  # symmetric
    # the same kernel as a prototxt's `bilinear` weight filler (Caffe master's formula)
    for layer in net.layer[1:]:
        layer.convolution_param.weight_filler.type = "bilinear"
    filled = Net(net, "TEST")
    np.testing.assert_array_equal(filled.params["up_group"][0].data, weights["up_group"][0])
    np.testing.assert_array_equal(filled.params["up_full"][0].data[0, 0], k)


def test_digits_alexnet_k63_s32_kernel_centre_on_pixel_31():
    """FCN-AlexNet (DIGITS) upsamples with kernel 63, stride 32, pad 0: the coordinate map
    puts input pixel 0 on output pixel (63 - 1) / 2 = 31, where the kernel must peak."""
    for group, shape in ((1, (3, 3, 63, 63)), (3, (3, 1, 63, 63))):
        w = bilinear_weights(shape, group)
        kernel = w[2, 2 % shape[1]]
        assert np.unravel_index(kernel.argmax(), kernel.shape) == (31, 31)
        assert kernel[31, 31] == 1.0 and np.array_equal(kernel, kernel[::-1, ::-1])
        np.testing.assert_array_equal(kernel, upsample_filt(63))


# ---- case 5: NYUD HHA (and color + HHA) inference ----

HHA_MEAN = (132.431, 94.076, 118.477)  # the reference nyud_layers.py HHA mean, channels as stored
NYUD_BGR_MEAN = (116.190, 97.203, 92.318)


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    """Width-1/64 nyud-fcn32s-hha and -color-hha folders with random weights; the field
    case's HHA image and a colour image of its size, in color/ and hha/ folders."""
    from engine_helpers import randomize

    folder = tmp_path_factory.mktemp("nyud")
    weights = {}
    for name in ("nyud-fcn32s-hha", "nyud-fcn32s-color-hha"):
        net = Net(str(generate(name, folder, width=1 / 64) / "deploy.prototxt"), "TEST")
        randomize(net, seed=1)
        weights[name] = folder / f"{name}.caffemodel"
        net.save(weights[name])
    hha = np.array(Image.open(CASES / "nyud-hha-image.png"))
    rgb = np.random.default_rng(2).integers(0, 256, hha.shape, dtype=np.uint8)
    for kind, pixels in (("hha", hha), ("color", rgb)):
        (folder / kind).mkdir()
        Image.fromarray(pixels).save(folder / kind / "img_5001.png")
    return folder, weights, rgb, hha


def _engine_labels(folder: Path, weights: Path, **inputs: np.ndarray) -> np.ndarray:
    net = Net(str(folder / "deploy.prototxt"), "TEST", weights=str(weights))
    out = net.forward(**{k: v[None] for k, v in inputs.items()})
    return out["score"][0].argmax(0)


def test_hha_net_infers_as_the_nyud_data_layer_preprocesses(nyud, tmp_path):
    import infer

    folder, weights, _, hha = nyud
    model = folder / "nyud-fcn32s-hha"
    assert infer.main([str(model), str(weights["nyud-fcn32s-hha"]),
                       str(folder / "hha" / "img_5001.png"), "-o", str(tmp_path), "--quiet"]) == 0
    label = np.array(Image.open(tmp_path / "img_5001.png"))
    hha_blob = (hha.astype(np.float32) - np.float32(HHA_MEAN)).transpose(2, 0, 1)  # not flipped
    np.testing.assert_array_equal(label, _engine_labels(model, weights["nyud-fcn32s-hha"],
                                                        data=hha_blob))
    from solvers.preprocess import input_plan

    plan = input_plan(model / "deploy.prototxt")
    assert plan.source == str(model / "val.prototxt")
    shown, feeds = plan.load({"data": folder / "hha" / "img_5001.png"})
    np.testing.assert_array_equal(feeds["data"], hha_blob)  # not BGR minus the VOC mean
    np.testing.assert_array_equal(shown, hha)


def test_color_hha_net_takes_one_image_per_input(nyud, tmp_path, capsys):
    import infer

    folder, weights, rgb, hha = nyud
    model, w = folder / "nyud-fcn32s-color-hha", str(weights["nyud-fcn32s-color-hha"])
    with pytest.raises(SystemExit) as e:
        infer.main([str(model), w, "--input", f"color={folder / 'color'}", "-o", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--input color=DIR --input hha=DIR" in err and "missing hha" in err
    assert not tmp_path.joinpath("img_5001.png").exists()
    assert infer.main([str(model), w, "--input", f"color={folder / 'color'}",
                       "--input", f"hha={folder / 'hha'}", "-o", str(tmp_path)]) == 0
    assert "color (color minus mean 116.19, 97.203, 92.318)" in capsys.readouterr().out
    label = np.array(Image.open(tmp_path / "img_5001.png"))
    color_blob = (rgb[:, :, ::-1].astype(np.float32) - np.float32(NYUD_BGR_MEAN))
    hha_blob = hha.astype(np.float32) - np.float32(HHA_MEAN)
    np.testing.assert_array_equal(label, _engine_labels(
        model, weights["nyud-fcn32s-color-hha"], color=color_blob.transpose(2, 0, 1),
        hha=hha_blob.transpose(2, 0, 1)))


def test_color_depth_net_reads_depth_as_the_nyud_layer(tmp_path):
    """nyud-fcn32s-color-d: color as BGR minus the NYUD mean, depth as log depth minus 7.844
    (zero depth clamped to 1), both read from the model folder's val net."""
    from solvers.preprocess import input_plan

    model = Path(__file__).parent.parent / "models" / "nyud-fcn32s-color-d"
    plan = input_plan(model / "deploy.prototxt")
    assert {t: m.name for t, m in plan.inputs.items()} == {"color": "color", "depth": "depth"}
    depth = np.array([[0, 1000], [2500, 65535]], np.uint16)
    Image.fromarray(depth).save(tmp_path / "d.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "c.png")
    _, feeds = plan.load({"color": tmp_path / "c.png", "depth": tmp_path / "d.png"})
    want = np.log(np.maximum(depth.astype(np.float32), 1)) - np.float32(7.844)
    np.testing.assert_allclose(feeds["depth"], want[None], rtol=1e-6)
    np.testing.assert_allclose(feeds["color"][:, 0, 0], -np.float32(NYUD_BGR_MEAN), rtol=1e-6)
    Image.fromarray(np.zeros((3, 2, 3), np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(FcnkitError, match="inputs differ in size"):
        plan.load({"color": tmp_path / "c.png", "depth": tmp_path / "d.png"})


# ---- case 3 (and 2, data side): binary masks stored as 0/255, labels out of range ----

def _mask_model(folder: Path, label_map: dict | None = None) -> Path:
    """voc-fcn32s with 2 classes, scratch recipe, width 1/64, on the field case's VOC-layout
    0/255 masks (4 train, 2 val images)."""
    data = {"label_map": label_map} if label_map else {}
    return generate("voc-fcn32s", folder, 2, 0.015625, recipe="scratch",
                    voc_dir=str(CASES / "binary-masks-0-255"), train_params=data,
                    val_params=data) / "solver.prototxt"


def test_binary_masks_0_255_warn_at_load_and_at_scoring(tmp_path, capsys):
    r = train(_mask_model(tmp_path), iters=1, progress=False, backend="torch")
    err = capsys.readouterr().err
    assert "VOCSegDataLayer (split 'train') 'label': the 4 label maps read hold only class 0 " \
           "and void 255" in err
    assert "{'label_map': {255: 1}}" in err
    assert "head 'score': the scored ground truth labels hold only class 0 and void 255" in err
    assert r.scores["score"]["per_class_iu"][1] != r.scores["score"]["per_class_iu"][1]  # NaN


def test_label_map_255_to_1_makes_the_masks_two_classes(tmp_path, capsys):
    r = train(_mask_model(tmp_path, {255: 1}), iters=1, progress=False, backend="torch")
    assert "warning" not in capsys.readouterr().err
    assert r.scores["score"]["n_pixels"] == 2 * 48 * 40  # val im4, im5: every pixel, none void


def test_data_layer_refuses_out_of_range_labels(tmp_path):
    """A label value that is neither a class nor void is an error naming the file (never
    clamped); many distinct values are named as a colour-coded label image."""
    import shutil

    from solvers.data.pascal import VOCSegDataset

    voc = tmp_path / "voc"
    shutil.copytree(CASES / "binary-masks-0-255", voc)
    label = np.array(Image.open(voc / "SegmentationClass" / "im2.png"))
    label[:4, :4] = 30
    Image.fromarray(label).save(voc / "SegmentationClass" / "im2.png")
    ds = VOCSegDataset({"voc_dir": str(voc), "split": "train"})
    with pytest.raises(FcnkitError, match=r"item 'im2' of split 'train': label .*im2.png: "
                                          r"value\(s\) 30 in 16 pixels, outside 0..20"):
        ds.load(2)
    with pytest.raises(FcnkitError, match="item 'im2'"):
        ds.survey_labels()  # at data layer setup, before any training
    label[:4, :8] = np.arange(38, 70, 1)[:32].reshape(4, 8)
    Image.fromarray(label).save(voc / "SegmentationClass" / "im2.png")
    with pytest.raises(FcnkitError, match="look like a colour-coded label image"):
        ds.load(2)
    mapped = VOCSegDataset({"voc_dir": str(voc), "split": "val", "label_map": {255: 1}})
    assert set(np.unique(mapped.load(0)["label"])) == {0, 1}
    with pytest.raises(FcnkitError, match="label_map"):
        VOCSegDataset({"voc_dir": str(voc), "split": "val", "label_map": {256: 1}})


def test_score_counts_out_of_range_ground_truth(tmp_path, capsys):
    """solvers.score leaves labels outside the classes unscored, and says how many."""
    from solvers.score import score_dirs

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    Image.fromarray(np.array([[0, 1, 7, 255]], np.uint8)).save(gt / "a.png")
    Image.fromarray(np.array([[0, 1, 1, 1]], np.uint8)).save(pred / "a.png")
    hist = score_dirs(pred, gt, 3)
    assert hist.sum() == 2
    err = capsys.readouterr().err
    assert "1 ground truth pixels hold labels outside 0..2 and not void 255" in err
    assert "class(es) 2 of 0..2 never occur in the scored ground truth labels" in err


def test_score_label_map_scores_0_255_masks_as_two_classes(tmp_path, capsys):
    from solvers.score import main

    gt = CASES / "binary-masks-0-255" / "SegmentationClass"
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in sorted(gt.glob("*.png")):
        Image.fromarray((np.array(Image.open(f)) == 255).astype(np.uint8)).save(pred / f.name)
    assert main([str(pred), str(gt), "--classes", "2", "--out", str(tmp_path / "s")]) == 0
    out, err = capsys.readouterr()
    assert "hold only class 0 and void 255" in err and "--label-map 255:1" in err
    assert main([str(pred), str(gt), "--classes", "2", "--label-map", "255:1",
                 "--out", str(tmp_path / "s")]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err
    mean_iu = [line.split()[-1] for line in out.splitlines() if line.startswith("mean IU")]
    assert mean_iu == ["100.00"]  # both classes, each predicted exactly
    with pytest.raises(SystemExit):
        main([str(pred), str(gt), "--classes", "2", "--label-map", "255:300"])
