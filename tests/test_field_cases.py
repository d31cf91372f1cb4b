"""The field cases of ../shared/field-cases/README.md (copied into tests/field_cases/): each
situation FCN users hit with Caffe, and the right behaviour fcnkit gives for it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
    out = capsys.readouterr().out
    assert "loss has stayed at ln(classes) per pixel for the first 20 iterations" in out


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
