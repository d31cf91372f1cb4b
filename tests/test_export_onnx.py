"""ONNX export (surgery.export_onnx) against fcnkit's engine, run by independent runtimes.

Every generated deploy net (the default set under models/, width-scaled to 1/32 and at most 8
classes per head where a dataset has more than 21, as in test_fcn_opencv: no kernel, stride,
pad or crop offset changes) gets random weights and is exported ONCE with dynamic N, H, W;
onnxruntime runs that one file at 1x1, 17x33, 224x224 and 375x500 and must match the engine
(relative error < 1e-4 on every score blob, same argmax). OpenCV 4.x's ONNX importer cannot
take symbolic sizes (its Shape op refuses dynamic inputs), so it gets one fixed-size export
(--size) per input size, and must match as well.
The engine's layer zoo nets (test_engine_opencv: LRN, grouped deconvolution, padded AVE and
ceil-mode MAX pooling, Eltwise, BatchNorm, InnerProduct, MVN, ...) and pooling cases where
Caffe's rounding differs from ONNX's run the same way.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
import pytest
import torch

from engine_helpers import net_param, randomize, rel_error
from fcn_helpers import random_weights
from netgen.presets import DEFAULT_SET, resolve
from netgen.schema import read_net, to_prototxt
from netgen.writer import generate
from solvers.engine import Net
from surgery.cli import main as surgery_main
from surgery.export_onnx import export, export_file
from test_engine_opencv import CASES as ZOO, with_input

SIZES = [(1, 1), (17, 33), (224, 224), (375, 500)]


def session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1   # the suite runs in parallel workers
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def deploy_with_weights(name: str, folder):
    dataset = resolve(name).dataset
    classes = 8 if dataset.num_classes > 21 and len(dataset.heads) == 1 else None
    deploy = generate(name, folder, classes, width=1 / 32) / "deploy.prototxt"
    weights = deploy.with_name("random.caffemodel")
    weights.write_bytes(random_weights(read_net(deploy)).SerializeToString())
    return deploy, weights


def assert_scores_match(ours: dict, ref: dict, what) -> None:
    """Scores within 1e-4 relative error; the same argmax at every pixel whose two best classes
    differ by more than that tolerance (random weights make a few float32 ties: at 375x500 a
    handful of pixels have their top two scores within 1e-8, where any rounding picks either;
    they must stay under 1%)."""
    for blob, expected in ref.items():
        got = ours[blob]
        assert got.shape == expected.shape, (what, blob)
        assert rel_error(got, expected) < 1e-4, (what, blob, rel_error(got, expected))
        if expected.ndim == 4 and expected.shape[1] > 1:
            top2 = np.sort(expected, axis=1)[:, -2:]
            decided = top2[:, 1] - top2[:, 0] > 1e-4 * np.abs(expected).max()
            assert decided.mean() > 0.99, (what, blob)
            assert (got.argmax(1) == expected.argmax(1))[decided].all(), (what, blob)


@pytest.mark.parametrize("name", DEFAULT_SET)
def test_deploy_net_matches_engine_in_onnxruntime_and_opencv(tmp_path, name):
    deploy, weights = deploy_with_weights(name, tmp_path)
    torch.manual_seed(0)
    net = Net(deploy, "TEST", weights=weights)
    dynamic = tmp_path / "net.onnx"
    export_file(deploy, weights, dynamic)
    sess = session(dynamic)
    outputs = [o.name for o in sess.get_outputs()]
    assert set(outputs) == set(net.outputs)
    assert all(i.shape[0] == "N" and i.shape[2:] == ["H", "W"] for i in sess.get_inputs())
    rng = np.random.default_rng(0)
    for h, w in SIZES:
        feeds = {i.name: rng.standard_normal((1, i.shape[1], h, w)).astype(np.float32)
                 for i in sess.get_inputs()}
        ref = {k: v.copy() for k, v in net.forward(**feeds).items()}
        assert all(v.shape[2:] == (h, w) for v in ref.values())
        assert_scores_match(dict(zip(outputs, sess.run(outputs, feeds))), ref, (name, h, w, "ort"))
        fixed = tmp_path / f"net-{h}x{w}.onnx"
        export_file(deploy, weights, fixed, size=(h, w))
        cvnet = cv2.dnn.readNetFromONNX(str(fixed))
        for top, x in feeds.items():
            cvnet.setInput(x, top)
        assert_scores_match(dict(zip(outputs, cvnet.forward(outputs))), ref, (name, h, w, "cv"))


def engine_and_export(text: str, tmp_path, seed: int = 1, **options):
    """A zoo net with random weights: the engine net, its prototxt and caffemodel, the export."""
    torch.manual_seed(0)
    net = Net(net_param(text), "TEST")
    randomize(net, seed=seed)
    proto, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    proto.write_text(to_prototxt(net_param(text)))
    net.save(model)
    return net, proto, model, export(proto, model, **options).model


# Pooling where Caffe's rounding is not ONNX's: ceil mode with pad (Caffe's clip of a last
# window starting in the padding), kernel < stride, AVE windows overhanging the padded input;
# and ceil mode without pad (ave_ceil, max_ceil: ONNX's own ceil_mode, as FCN's pools).
POOLS = with_input('''
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "max_pad" type: "Pooling" bottom: "conv" top: "max_pad" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "max_gap" type: "Pooling" bottom: "conv" top: "max_gap" pooling_param { pool: MAX kernel_size: 1 stride: 3 } }
layer { name: "ave_pad" type: "Pooling" bottom: "conv" top: "ave_pad" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "ave_wide" type: "Pooling" bottom: "conv" top: "ave_wide" pooling_param { pool: AVE kernel_h: 4 kernel_w: 2 stride_h: 3 stride_w: 2 pad_h: 2 pad_w: 1 } }
layer { name: "ave_floor" type: "Pooling" bottom: "conv" top: "ave_floor" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR } }
layer { name: "ave_gap" type: "Pooling" bottom: "conv" top: "ave_gap" pooling_param { pool: AVE kernel_size: 2 stride: 3 } }
layer { name: "ave_ceil" type: "Pooling" bottom: "conv" top: "ave_ceil" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "max_ceil" type: "Pooling" bottom: "conv" top: "max_ceil" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
''')
POOL_SIZES = [(1, 3, 2, 2), (2, 3, 4, 4), (1, 3, 5, 7), (1, 3, 6, 9), (1, 3, 13, 10)]


@pytest.mark.parametrize("name", [*ZOO, "pools"])
@pytest.mark.parametrize("fixed", [False, True])
def test_layer_zoo_matches_engine(tmp_path, name, fixed):
    text, shapes = (POOLS, POOL_SIZES) if name == "pools" else ZOO[name]
    if fixed:   # OpenCV-style constant shapes: every size its own export
        shapes = shapes[:2]
    net, proto, model, m = engine_and_export(text, tmp_path)
    batch = net.blobs["data"].shape[0]   # a fixed export keeps the prototxt's batch
    rng = np.random.default_rng(2)
    for shape in shapes:
        if fixed:
            shape = (batch, *shape[1:])
            m = export(proto, model, size=shape[2:]).model
            assert not any(n.op_type in ("Shape", "Range") for n in m.graph.node)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        x = rng.normal(size=shape).astype(np.float32)
        ref = {k: v.copy() for k, v in net.forward(data=x).items()}
        outputs = [o.name for o in sess.get_outputs()]
        got = dict(zip(outputs, sess.run(outputs, {"data": x})))
        for blob in ref:
            assert got[blob].shape == ref[blob].shape, (name, shape, blob)
            # Caffe divides an AVE window lying wholly past the padded input by 0: NaN both sides
            nan = np.isnan(ref[blob])
            assert (np.isnan(got[blob]) == nan).all(), (name, shape, blob)
            assert rel_error(got[blob][~nan], ref[blob][~nan]) < 1e-4, (name, shape, blob)


def test_an_input_rewritten_in_place_keeps_its_name(tmp_path):
    """An in-place layer on the input blob (ReLU, Scale on `data`): the consumer still feeds
    `data`; only the rewritten version is renamed."""
    text = with_input('''
layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
layer { name: "conv" type: "Convolution" bottom: "data" top: "score" convolution_param { num_output: 2 kernel_size: 1 } }
''')
    net, _, _, m = engine_and_export(text, tmp_path)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["data"]
    x = np.random.default_rng(3).normal(size=net.blobs["data"].shape).astype(np.float32)
    ref = net.forward(data=x.copy())["score"].copy()
    assert rel_error(sess.run(["score"], {"data": x})[0], ref) < 1e-4


def test_pools_use_explicit_padding_only_where_onnx_differs(tmp_path):
    """MAX k=3 s=2 p=1 needs Caffe's clip (explicit Pad); FCN's k=2 s=2 p=0 is plain ceil_mode."""
    m = engine_and_export(POOLS, tmp_path)[3]
    pads = {n.output[0].split("_padded")[0] for n in m.graph.node if n.op_type == "Pad"}
    assert pads == {"max_pad", "max_gap", "ave_pad", "ave_wide", "ave_gap"}


def test_argmax_fp16_and_metadata(tmp_path):
    deploy, weights = deploy_with_weights("voc-fcn8s-atonce", tmp_path)
    full, half = tmp_path / "full.onnx", tmp_path / "half.onnx"
    export_file(deploy, weights, full, argmax=True)
    export_file(deploy, weights, half, fp16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = np.random.default_rng(3).standard_normal((2, 3, 40, 30)).astype(np.float32)
    score, label = session(full).run(["score", "label"], {"data": x})
    assert label.dtype == np.int64 and label.shape == (2, 40, 30)
    assert (label == score.argmax(1)).all()
    (half_score,) = session(half).run(["score"], {"data": x})
    assert 0 < rel_error(half_score, score) < 1e-2
    meta = {p.key: p.value for p in onnx.load(full).metadata_props}
    pre = json.loads(meta["fcnkit.preprocessing"])
    assert pre["data"]["channel_order"] == "BGR" and len(pre["data"]["mean"]) == 3
    assert meta["fcnkit.opset"] == "17" and onnx.load(full).opset_import[0].version == 17


def test_nyud_inputs_and_preprocessing_options(tmp_path, capsys):
    deploy, weights = deploy_with_weights("nyud-fcn32s-color-hha", tmp_path)
    out = tmp_path / "nyud.onnx"
    assert surgery_main(["export", str(deploy), str(weights), str(out), "--mean",
                         "color=116.19,97.203,92.318", "--mean", "hha=132.431,94.076,118.477",
                         "--channel-order", "hha=as-is"]) == 0
    assert "inputs color, hha" in capsys.readouterr().out
    pre = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}
                                   ["fcnkit.preprocessing"])
    assert pre["hha"]["channel_order"] == "as-is" and pre["color"]["mean"][0] == 116.19


# ---- bad input: one line, non-zero exit, nothing written

def run_cli(args, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        surgery_main(["export", *map(str, args)])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("suffix", [".onnx", ".py"])
def test_preprocessing_for_a_blob_that_is_not_an_input(tmp_path, capsys, suffix):
    """--mean score=...: `score` is a blob, not an input; refused in both exports, nothing written."""
    deploy, weights = deploy_with_weights("voc-fcn32s", tmp_path)
    out = tmp_path / f"net{suffix}"
    err = run_cli([deploy, weights, out, "--mean", "score=1,2,3"], capsys)
    assert "no input named 'score'" in err and "(inputs: data)" in err
    assert not out.exists() and not out.with_suffix(".pt").exists()


def test_unsupported_layers_are_named(tmp_path, capsys):
    deploy, weights = deploy_with_weights("voc-fcn32s", tmp_path)
    text = deploy.read_text()
    for kind, extra in (("Interp", 'layer { name: "zoom" type: "Interp" bottom: "score" top: "zoom" }'),
                        ("SoftmaxWithLoss", 'layer { name: "loss" type: "SoftmaxWithLoss" '
                                            'bottom: "score" bottom: "data" top: "loss" }')):
        bad = tmp_path / f"{kind}.prototxt"
        bad.write_text(text + extra)
        err = run_cli([bad, weights, tmp_path / "out.onnx"], capsys)
        assert kind in err and ("zoom" in err or "loss" in err)
    assert not list(tmp_path.glob("*.onnx*")) and not list(tmp_path.glob(".out.onnx*"))


def test_weights_missing_a_layer(tmp_path, capsys):
    deploy, _ = deploy_with_weights("voc-fcn16s", tmp_path)
    weights = random_weights(read_net(deploy))
    kept = [layer for layer in weights.layer if layer.name != "score_pool4"]
    del weights.layer[:]
    weights.layer.extend(kept)
    partial = tmp_path / "partial.caffemodel"
    partial.write_bytes(weights.SerializeToString())
    err = run_cli([deploy, partial, tmp_path / "out.onnx"], capsys)
    assert "score_pool4" in err and "partial.caffemodel" in err
    other = generate("voc-fcn16s", tmp_path / "five", 5, width=1 / 32) / "deploy.prototxt"
    wrong = tmp_path / "five.caffemodel"   # weights of a 5-class net: score_fr does not fit
    wrong.write_bytes(random_weights(read_net(other)).SerializeToString())
    err = run_cli([deploy, wrong, tmp_path / "out.onnx"], capsys)
    assert "five.caffemodel" in err and "score_fr" in err
    assert not list(tmp_path.glob("*.onnx*")) and not list(tmp_path.glob(".out.onnx*"))


def test_unwritable_output(tmp_path, capsys):
    deploy, weights = deploy_with_weights("voc-fcn32s", tmp_path)
    err = run_cli([deploy, weights, tmp_path / "no" / "such" / "dir.onnx"], capsys)
    assert "does not exist" in err
    err = run_cli([deploy, weights, tmp_path], capsys)
    assert "is a folder" in err
    assert not list(tmp_path.rglob("*.onnx*"))


def test_crop_offsets_are_checked_against_the_coordinate_map(tmp_path):
    """A hand-edited offset is exported as written (Caffe runs it so) and reported."""
    deploy, weights = deploy_with_weights("voc-fcn32s", tmp_path)
    edited = tmp_path / "edited.prototxt"
    edited.write_text(deploy.read_text().replace("offset: 19", "offset: 18"))
    result = export(edited, weights)
    assert len(result.warnings) == 1
    assert "offsets [18]" in result.warnings[0] and "says [19]" in result.warnings[0]
    x = np.random.default_rng(4).standard_normal((1, 3, 20, 24)).astype(np.float32)
    ref = Net(edited, "TEST", weights=weights).forward(data=x)["score"]
    got = ort.InferenceSession(result.model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(["score"], {"data": x})[0]
    assert rel_error(got, ref) < 1e-4


# ---- infer.py --backend onnxruntime

def test_infer_onnxruntime_backend_matches_torch(tmp_path, capsys):
    import infer
    from PIL import Image

    deploy, weights = deploy_with_weights("synthetic-fcn8s", tmp_path)
    onnx_file = tmp_path / "net.onnx"
    export_file(deploy, weights, onnx_file)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    for i, (h, w) in enumerate(((40, 56), (33, 21))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    labels = {}
    for backend, model in (("torch", weights), ("onnxruntime", onnx_file),
                           ("onnxruntime", weights)):
        out = tmp_path / f"{backend}-{model.suffix}"
        assert infer.main([str(deploy), str(model), str(images), "-o", str(out), "--backend",
                           backend, "--quiet"]) == 0
        labels[out.name] = [np.array(Image.open(out / f"img{i}.png")) for i in range(2)]
    ref = labels.pop("torch-.caffemodel")
    for name, got in labels.items():
        for a, b in zip(got, ref):
            assert a.shape == b.shape and (a == b).mean() > 0.99, name
    fixed = tmp_path / "fixed.onnx"
    export_file(deploy, weights, fixed, size=(40, 56))
    with pytest.raises(SystemExit):
        infer.main([str(deploy), str(fixed), str(images), "-o", str(tmp_path / "f"),
                    "--backend", "onnxruntime", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exported for 40x56 inputs only" in err


# ---- PyTorch export: generated torch.nn.Module + state_dict (surgery.export_torch)

def import_generated(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"generated_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# every layer family of the deploy set: crops at stride 8/16/32, at-once's fixed Scale layers,
# AlexNet's LRN and grouped convolutions, two inputs (early and late fusion), two heads
@pytest.mark.parametrize("name", ["voc-fcn8s-atonce", "voc-fcn-alexnet", "nyud-fcn32s-color-hha",
                                  "nyud-fcn32s-color-d", "siftflow-fcn16s"])
def test_torch_module_matches_engine(tmp_path, name):
    deploy, weights = deploy_with_weights(name, tmp_path)
    net = Net(deploy, "TEST", weights=weights)
    assert surgery_main(["export", str(deploy), str(weights), str(tmp_path / "fcn.py")]) == 0
    module = import_generated(tmp_path / "fcn.py")
    model = module.load()
    assert isinstance(model, torch.nn.Module) and module.OUTPUTS == tuple(net.outputs)
    rng = np.random.default_rng(6)
    for h, w in SIZES:
        feeds = {top: rng.standard_normal((1, net.blobs[top].shape[1], h, w)).astype(np.float32)
                 for top in module.INPUTS}
        ref = {k: v.copy() for k, v in net.forward(**feeds).items()}
        with torch.no_grad():
            out = model(*(torch.from_numpy(feeds[t]) for t in module.INPUTS))
        out = out if isinstance(out, tuple) else (out,)
        assert_scores_match({k: v.numpy() for k, v in zip(module.OUTPUTS, out)}, ref, (name, h, w))


@pytest.mark.parametrize("name", [*ZOO, "pools"])
def test_torch_module_layer_zoo(tmp_path, name):
    from surgery.export_torch import export_file as export_torch

    text, shapes = (POOLS, POOL_SIZES) if name == "pools" else ZOO[name]
    net, proto, model_file, _ = engine_and_export(text, tmp_path)
    export_torch(proto, model_file, tmp_path / "zoo.py")
    module = import_generated(tmp_path / "zoo.py")
    model = module.load()
    rng = np.random.default_rng(7)
    for shape in shapes:
        x = rng.normal(size=shape).astype(np.float32)
        ref = {k: v.copy() for k, v in net.forward(data=x).items()}
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        out = out if isinstance(out, tuple) else (out,)
        for blob, got in zip(module.OUTPUTS, out):
            nan = np.isnan(ref[blob])
            assert got.shape == ref[blob].shape and (np.isnan(got.numpy()) == nan).all()
            assert rel_error(got.numpy()[~nan], ref[blob][~nan]) < 1e-4, (name, shape, blob)


def test_torch_module_runs_without_fcnkit(tmp_path):
    """The generated file imports torch only: load and run it with fcnkit's packages blocked."""
    import subprocess
    import sys

    deploy, weights = deploy_with_weights("voc-fcn32s", tmp_path)
    assert surgery_main(["export", str(deploy), str(weights), str(tmp_path / "fcn32s.py")]) == 0
    code = ("import sys\nfor m in ('netgen', 'solvers', 'surgery'): sys.modules[m] = None\n"
            "import torch, fcn32s\nprint(tuple(fcn32s.load()(torch.zeros(1, 3, 19, 23)).shape))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 21, 19, 23)"


def test_fixed_scale_layers_may_be_absent_and_hdf5_weights(tmp_path):
    """The at-once net's scale_pool4/3 (lr_mult 0, constant 0.01 / 0.0001) keep their filler when
    the caffemodel lacks them, as in Caffe; HDF5 weights export the same as binary."""
    from surgery.caffemodel import load_weights, save_weights

    deploy, weights = deploy_with_weights("voc-fcn8s-atonce", tmp_path)
    loaded = load_weights(weights)
    for name in ("scale_pool3", "scale_pool4"):
        del loaded[name]
    # absent altogether: written with their (empty) layer groups, real Caffe aborts with
    # "Incompatible number of blobs for layer scale_pool4", and so does the engine
    loaded.net = None
    h5 = tmp_path / "trimmed.caffemodel.h5"
    save_weights(h5, loaded, format="hdf5")
    model = export(deploy, h5).model
    scales = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
              if t.name.startswith("scale_pool")}
    assert len(scales) == 2
    assert np.allclose(scales["scale_pool4_scale"], 0.01)
    assert np.allclose(scales["scale_pool3_scale"], 0.0001)
    x = np.random.default_rng(8).standard_normal((1, 3, 30, 26)).astype(np.float32)
    ref = Net(deploy, "TEST", weights=h5).forward(data=x)["score"]
    got = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(["score"], {"data": x})[0]
    assert rel_error(got, ref) < 1e-4
