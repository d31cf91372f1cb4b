"""FCN builders, presets and the writer: options, data layers, all-or-nothing folders, models/."""
import ast
import inspect
import re
from pathlib import Path

import pytest

import netgen.fcn as fcn
import netgen.writer as writer
from netgen.errors import FcnkitError
from netgen.fcn import DataSpec, Head, fcn_alexnet, fcn_vgg16, scale_channels
from netgen.presets import DATASETS, DEFAULT_SET, NETS, PUBLISHED, resolve
from netgen.schema import read_net
from netgen.writer import build_net, generate, generate_all
from solvers.data.layers import layer_class
from solvers.data.params import parse_param_str, validate

REPO = Path(__file__).resolve().parents[1]


def layers(net):
    return {l.name: l for l in net.layer}


def crops(net):
    return {l.name: list(l.crop_param.offset) for l in net.layer if l.type == "Crop"}


# ---- offsets are computed ----

def test_builder_source_types_no_crop_offset():
    source = inspect.getsource(fcn)
    assert "offset=" not in source and "L.Crop(" not in source and "crop_param" not in source


@pytest.mark.parametrize("kernel, offset", [(64, 19), (66, 20), (96, 35)])
def test_offsets_follow_the_upsampling_geometry(monkeypatch, kernel, offset):
    # (k-1)/2 - 25/2: the deconvolution's centre minus the trunk's shift at stride 32
    monkeypatch.setitem(fcn.VGG16_STRIDES, "32s", fcn._Upsampling((), kernel, 32))
    assert crops(fcn_vgg16("deploy", "32s")) == {"score": [offset]}


def test_misaligned_upsampling_is_refused(monkeypatch):
    monkeypatch.setitem(fcn.VGG16_STRIDES, "32s", fcn._Upsampling((), 65, 32))
    with pytest.raises(FcnkitError, match="non-integer offset"):
        fcn_vgg16("deploy", "32s")


# ---- width and classes ----

@pytest.mark.parametrize("channels, width, multiple, expected", [
    (64, 1.0, 1, 64), (64, 1 / 16, 1, 4), (4096, 1 / 32, 1, 128), (64, 1e-6, 1, 1),
    (96, 1 / 32, 2, 4), (100, 0.015, 1, 2), (384, 1 / 32, 2, 12), (96, 0.001, 2, 2)])
def test_scale_channels(channels, width, multiple, expected):
    assert scale_channels(channels, width, multiple) == expected


def test_width_scales_hidden_channels_and_keeps_classes():
    full, slim = layers(fcn_vgg16("deploy", "8s", 21)), layers(fcn_vgg16("deploy", "8s", 21, width=0.25))
    for name, layer in full.items():
        if layer.type not in ("Convolution", "Deconvolution"):
            continue
        n, m = layer.convolution_param.num_output, slim[name].convolution_param.num_output
        assert m == (21 if "score" in name or "up" in name else n // 4), name


def test_alexnet_width_keeps_grouped_convolutions_divisible():
    net = layers(fcn_alexnet("deploy", width=1 / 32))
    outs = {n: net[n].convolution_param.num_output for n in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    assert outs == {"conv1": 4, "conv2": 8, "conv3": 12, "conv4": 12, "conv5": 8}


def test_classes_option_reaches_every_score_layer_and_the_data_layer(tmp_path):
    net = read_net(generate("synthetic-fcn8s", tmp_path, num_classes=3) / "train.prototxt")
    outs = {l.name: l.convolution_param.num_output for l in net.layer
            if l.type in ("Convolution", "Deconvolution") and ("score" in l.name or "up" in l.name)}
    assert set(outs.values()) == {3} and len(outs) == 6
    assert ast.literal_eval(net.layer[0].python_param.param_str)["n_classes"] == 2


@pytest.mark.parametrize("name, classes, message", [
    ("voc-fcn8s", 0, "--classes must be an integer >= 2 (a softmax over one class cannot learn), not 0"),
    ("voc-fcn8s", -3, "--classes must be an integer >= 2"),
    ("siftflow-fcn8s", 5, "2 heads (33 + 3 classes)"),
    ("synthia-fcn8s", 7, "supports 16 or 19 classes, not 7"),
    ("synthetic-fcn8s", 1, "--classes must be an integer >= 2"),
])
def test_bad_class_counts_are_refused(tmp_path, name, classes, message):
    with pytest.raises(FcnkitError, match=re.escape(message)):
        generate(name, tmp_path, num_classes=classes)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(stride="4s"), "stride must be one of 32s, 16s, 8s, 8s-atonce"),
    (dict(phase="test"), "phase must be one of train, val, deploy"),
    (dict(width=0), "width must be a positive number"),
    (dict(width=float("nan")), "width must be a positive number"),
    (dict(num_classes=0), "positive integer"),
    (dict(heads=[]), "at least one head"),
    (dict(phase="deploy", data=DataSpec("VOCSegDataLayer")), "deploy nets read an Input layer"),
    (dict(stride="8s", inputs=(("color", 3), ("hha", 3)), fusion="late"), "late fusion"),
    (dict(inputs=(("a", 3), ("b", 1)), fusion="middle"), "fusion must be one of early, late"),
])
def test_builder_refuses_bad_options(kwargs, message):
    with pytest.raises(FcnkitError, match=message):
        fcn_vgg16(**{"phase": "deploy", **kwargs})


def test_alexnet_is_32s_only():
    with pytest.raises(FcnkitError, match="stride must be one of 32s"):
        fcn_alexnet("deploy", "8s")


def test_input_data_mode_feeds_data_and_label_through_an_input_layer():
    net = build_net(resolve("voc-fcn16s"), "train", writer.Options(data="input"))
    source = net.layer[0]
    assert (source.name, source.type, list(source.top)) == ("input", "Input", ["data", "label"])
    assert [list(s.dim) for s in source.input_param.shape] == [[1, 3, 500, 500], [1, 1, 500, 500]]
    assert net.layer[-1].type == "SoftmaxWithLoss"


def test_heads_share_one_trunk():
    net = fcn_vgg16("val", "32s", data=DataSpec("X", {}), heads=[Head(4, "_a", "la", "loss_a"),
                                                                  Head(2, "_b", "lb", "loss_b")])
    assert list(net.layer[0].top) == ["data", "la", "lb"]
    names = [l.name for l in net.layer]
    assert names.count("fc7") == 1
    assert names[names.index("relu7") + 1:] == ["score_fr_a", "upscore_a", "score_a", "loss_a",
                                                "score_fr_b", "upscore_b", "score_b", "loss_b"]


# ---- presets against the data layers ----

@pytest.mark.parametrize("name", DEFAULT_SET + ("nyud-fcn32s", "synthetic-fcn-alexnet"))
@pytest.mark.parametrize("phase", ["train", "val"])
def test_data_layers_accept_their_param_str(name, phase):
    """Every python_param names a real data layer (solvers.data) whose key table accepts the
    param_str, whose tops are the net's data tops and whose class count is the net's."""
    model = resolve(name)
    source = build_net(model, phase).layer[0]
    cls = layer_class(source.python_param.module, source.python_param.layer)
    params = validate(parse_param_str(source.python_param.param_str, source.name),
                      cls.DATASET.spec(), source.name)
    expected = list(params["tops"]) if "tops" in params else list(cls.DATASET.TOP_KINDS)
    if len(model.inputs) == 1:
        expected[0] = "data"  # one modality is read as `data`, as the reference does
    assert list(source.top) == expected
    if model.dataset.class_param is None:
        assert cls.DATASET.N_CLASSES == model.dataset.num_classes
    assert params["randomize"] == (phase == "train") and params["seed"] == 1337


def test_every_published_model_resolves_and_names_itself():
    for name in PUBLISHED:
        model = resolve(name)
        assert model.name == name and model.published


def test_dataset_override_renames_the_folder(tmp_path):
    folder = generate("voc-fcn8s", tmp_path, dataset="cityscapes")
    assert folder == tmp_path / "cityscapes-fcn8s"
    net = read_net(folder / "train.prototxt")
    assert net.layer[0].python_param.layer == "CityscapesSegDataLayer"
    assert layers(net)["score_fr"].convolution_param.num_output == 19


@pytest.mark.parametrize("name, message", [
    ("voc-fcn9s", "unknown model 'voc-fcn9s'"), ("fcn8s", "unknown model"),
    ("voc-fcn32s-hha", "reads input 'hha', which dataset voc does not have")])
def test_unknown_or_impossible_models(name, message):
    with pytest.raises(FcnkitError, match=message):
        resolve(name)


def test_nets_and_datasets_tables_are_consistent():
    assert all(net.arch in fcn.ARCHITECTURES for net in NETS.values())
    assert all(ds.val_size > 0 and ds.heads for ds in DATASETS.values())


# ---- writing ----

def test_header_names_the_model_and_the_options(tmp_path):
    folder = generate("voc-fcn8s", tmp_path, num_classes=5, width=0.25)
    for f in ("train", "val", "deploy", "solver"):
        head = (folder / f"{f}.prototxt").read_text(encoding="utf-8").splitlines()[:2]
        assert head == ["# generated by fcnkit netgen voc-fcn8s — do not edit; regenerate with "
                        "python -m netgen",
                        "# options: python -m netgen generate voc-fcn8s --classes 5 --width 0.25"]


def test_regenerating_keeps_other_files_and_replaces_ours(tmp_path):
    folder = generate("voc-fcn32s", tmp_path)
    (folder / "snapshot").mkdir()
    (folder / "train.prototxt").write_text("stale")
    generate("voc-fcn32s", tmp_path)
    assert (folder / "snapshot").is_dir()
    assert (folder / "train.prototxt").read_text(encoding="utf-8").startswith("# generated")


def test_a_failed_write_leaves_no_partial_files(tmp_path, monkeypatch):
    real = writer.atomic_write

    def failing(path, mode="wb"):
        if Path(path).name == "deploy.prototxt":
            raise OSError(28, "No space left on device", str(path))
        return real(path, mode)

    monkeypatch.setattr(writer, "atomic_write", failing)
    with pytest.raises(OSError):
        generate("voc-fcn8s", tmp_path)
    assert list(tmp_path.rglob("*")) == []  # not even the folder

    monkeypatch.setattr(writer, "atomic_write", real)
    folder = generate("voc-fcn8s", tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(writer, "atomic_write", failing)
    with pytest.raises(OSError):
        generate("voc-fcn8s", tmp_path, width=0.5)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # old set intact, no temps


def test_a_folder_in_the_way_is_reported_before_writing(tmp_path):
    folder = generate("voc-fcn32s", tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "val.prototxt").unlink()
    (folder / "val.prototxt").mkdir()
    with pytest.raises(FcnkitError, match="val.prototxt: exists and is not a file"):
        generate("voc-fcn32s", tmp_path, width=0.5)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == \
        {k: v for k, v in before.items() if k != "val.prototxt"}


def test_committed_models_are_reproduced_byte_for_byte(tmp_path):
    """models/ is exactly what `python -m netgen` writes: regenerate and compare every file."""
    generate_all(tmp_path)
    committed = REPO / "models"

    def tree(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.prototxt"))}

    ours, theirs = tree(tmp_path), tree(committed)
    assert sorted(ours) == sorted(theirs)
    assert [k for k in ours if ours[k] != theirs[k]] == []
    assert sorted(p.name for p in committed.iterdir() if p.is_dir()) == sorted(DEFAULT_SET)
