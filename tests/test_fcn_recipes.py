"""Training recipes: what "scratch" changes in nets and solvers, what it leaves alone, and the
generate options that go with it (VOC-layout data, param_str keys, solver fields, header)."""
import shlex

import pytest

from netgen.cli import main
from netgen.errors import FcnkitError
from netgen.fcn import REFERENCE, Recipe, fcn_alexnet, fcn_vgg16
from netgen.presets import RECIPES, resolve, resolve_recipe
from netgen.proto import caffe_pb2
from netgen.schema import read_net, read_solver
from netgen.writer import Options, build_net, build_solver, generate
from solvers.data.layers import layer_class
from solvers.data.params import parse_param_str, validate

SCRATCH = RECIPES["scratch"]
WIDTH = 1 / 16
LOSS = caffe_pb2.LossParameter


def by_name(net):
    return {layer.name: layer for layer in net.layer}


def crops(net):
    return {l.name: (list(l.bottom), list(l.crop_param.offset)) for l in net.layer
            if l.type == "Crop"}


def trunk_convs(net):
    return [l for l in net.layer if l.type == "Convolution" and not l.name.startswith("score")]


BUILDS = [
    ("vgg16-32s", lambda phase, recipe: fcn_vgg16(phase, "32s", 6, width=WIDTH, recipe=recipe)),
    ("vgg16-8s", lambda phase, recipe: fcn_vgg16(phase, "8s", 6, width=WIDTH, recipe=recipe)),
    ("vgg16-atonce", lambda phase, recipe: fcn_vgg16(phase, "8s-atonce", 6, width=WIDTH,
                                                     recipe=recipe)),
    ("alexnet", lambda phase, recipe: fcn_alexnet(phase, "32s", 6, width=WIDTH, recipe=recipe)),
]


@pytest.mark.parametrize("label, build", BUILDS)
def test_scratch_train_net(label, build):
    net = build("train", SCRATCH)
    layers = by_name(net)
    assert not [l for l in net.layer if l.type == "Dropout"]
    scale = layers["data_scale"]
    assert (scale.type, list(scale.bottom), list(scale.top)) == ("Scale", ["data"],
                                                                ["data_scaled"])
    assert scale.scale_param.filler.type == "constant"
    assert scale.scale_param.filler.value == pytest.approx(1 / 64)
    assert not scale.scale_param.bias_term
    assert [(p.lr_mult, p.decay_mult) for p in scale.param] == [(0, 0)]
    first = trunk_convs(net)[0]
    assert list(first.bottom) == ["data_scaled"]
    assert [l.name for l in net.layer].index("data_scale") < [l.name for l in net.layer].index(
        first.name)
    for conv in trunk_convs(net):
        c = conv.convolution_param
        assert c.weight_filler.type == "msra", conv.name
        assert (c.bias_filler.type, c.bias_filler.value) == ("constant", 0), conv.name
    for layer in net.layer:  # scores start at zero: Caffe's default filler, none written
        if layer.name.startswith("score") and layer.type == "Convolution" or \
                layer.type == "Deconvolution":
            assert not layer.convolution_param.HasField("weight_filler"), layer.name
    loss = layers["loss"].loss_param
    assert loss.normalization == LOSS.VALID and not loss.HasField("normalize")
    assert loss.ignore_label == 255


@pytest.mark.parametrize("label, build", BUILDS)
@pytest.mark.parametrize("phase", ["train", "val", "deploy"])
def test_scratch_keeps_the_reference_geometry(label, build, phase):
    """The Scale is the identity in the coordinate map: the same Crop layers, reading the
    unscaled input, with the same offsets; apart from the recipe's layers the nets match."""
    ref, new = build(phase, REFERENCE), build(phase, SCRATCH)
    assert crops(new) == crops(ref)
    assert any(bottoms[1] == "data" for bottoms, _ in crops(new).values())
    kept = [l.name for l in ref.layer if l.type != "Dropout"]
    assert [l.name for l in new.layer if l.name != "data_scale"] == kept


def test_reference_recipe_is_the_builders_default():
    assert fcn_vgg16("train", "16s", recipe=REFERENCE) == fcn_vgg16("train", "16s")
    assert fcn_alexnet("val", recipe=REFERENCE) == fcn_alexnet("val")
    assert resolve_recipe("reference") is REFERENCE


@pytest.mark.parametrize("field, value, message", [
    ("weight_filler", "uniform", "weight_filler must be one of msra, xavier"),
    ("loss_normalization", "MEAN", "loss_normalization must be one of FULL, VALID"),
    ("input_scale", 0.0, "input scale must be a positive number"),
    ("input_scale", float("inf"), "input scale must be a positive number"),
])
def test_bad_recipes_are_refused(field, value, message):
    with pytest.raises(FcnkitError, match=message):
        fcn_vgg16(recipe=Recipe("mine", **{field: value}))


def test_other_recipe_values_reach_the_net():
    recipe = Recipe("mine", weight_filler="xavier", loss_normalization="BATCH_SIZE",
                    input_scale=0.5)
    layers = by_name(fcn_vgg16("train", "32s", width=WIDTH, recipe=recipe))
    assert layers["fc6"].convolution_param.weight_filler.type == "xavier"
    assert layers["loss"].loss_param.normalization == LOSS.BATCH_SIZE
    assert layers["data_scale"].scale_param.filler.value == 0.5
    assert "drop6" in layers  # dropout stays unless the recipe turns it off


def test_late_fusion_scales_each_input():
    net = build_net(resolve("nyud-fcn32s-color-hha"), "train",
                    Options(width=WIDTH, recipe="scratch"))
    layers = by_name(net)
    for mod in ("color", "hha"):
        assert list(layers[f"{mod}_scale"].top) == [f"{mod}_scaled"]
        assert list(layers[f"conv1_1{mod}"].bottom) == [f"{mod}_scaled"]


def test_scratch_solver_and_overrides():
    model = resolve("synthetic-fcn16s")
    solver = build_solver(model, Options(recipe="scratch"))
    assert solver.type == "Adam" and solver.base_lr == pytest.approx(1e-3)
    assert (solver.momentum, solver.momentum2, solver.delta) == pytest.approx((0.9, 0.999, 1e-8))
    assert solver.lr_policy == "fixed" and solver.weight_decay == pytest.approx(1e-5)
    assert solver.iter_size == 1
    assert list(solver.test_iter) == [model.dataset.val_size]  # the model's, not the recipe's
    assert solver.snapshot_prefix == "snapshot/train"
    reference = build_solver(model)
    assert not reference.HasField("type") and reference.base_lr == pytest.approx(1e-12)
    tuned = build_solver(model, Options(recipe="scratch", solver={
        "base_lr": 5e-4, "test_iter": 7, "max_iter": 10, "random_seed": 3}))
    assert list(tuned.test_iter) == [7]  # replaced, not appended
    assert (tuned.base_lr, tuned.max_iter, tuned.random_seed) == (pytest.approx(5e-4), 10, 3)
    with pytest.raises(FcnkitError, match="--solver: SolverParameter has no option 'max_iters'"):
        build_solver(model, Options(solver={"max_iters": 10}))


@pytest.mark.parametrize("phase", ["train", "val"])
def test_voc_dir_reads_a_voc_layout_folder(phase):
    """The data layer the synthetic demo writes for: VOCSegDataLayer on the folder, with the
    split of the phase and the extra keys; its key table accepts the param_str."""
    extra = {"seed": 0, "batch_size": 2} if phase == "train" else {"seed": 0}
    options = Options(num_classes=4, voc_dir="../../data", **{f"{phase}_params": extra})
    source = build_net(resolve("synthetic-fcn8s"), phase, options).layer[0]
    assert source.python_param.layer == "VOCSegDataLayer"
    cls = layer_class(source.python_param.module, source.python_param.layer)
    params = validate(parse_param_str(source.python_param.param_str, source.name),
                      cls.DATASET.spec(), source.name)
    assert params["voc_dir"] == "../../data" and params["split"] == phase
    assert params["randomize"] == (phase == "train")
    assert params["seed"] == 0 and params["batch_size"] == extra.get("batch_size", 1)


@pytest.mark.parametrize("name", ["siftflow-fcn32s", "nyud-fcn32s-color-hha"])
def test_voc_dir_refuses_several_inputs_or_labels(name):
    with pytest.raises(FcnkitError, match="--voc-dir"):
        build_net(resolve(name), "train", Options(voc_dir="data"))


@pytest.mark.parametrize("options, message", [
    (Options(data="input", voc_dir="d"), "not with --data input"),
    (Options(data="input", train_params={"seed": 1}), "not with --data input"),
    (Options(recipe="fast"), "unknown recipe 'fast': one of reference, scratch"),
    (Options(input_scale=-1.0), "--input-scale must be a positive number"),
    (Options(input_size=(0, 5)), "--input-size must be two positive integers"),
    (Options(train_params={"bad key": 1}), "--train-param: key must be a name"),
    (Options(solver={"base_lr": object()}), "--solver base_lr: value must be a plain literal"),
])
def test_bad_options_are_refused(tmp_path, options, message):
    with pytest.raises(FcnkitError, match=message):
        options.check()


def test_input_size_and_scale_reach_the_deploy_net():
    net = build_net(resolve("synthetic-fcn32s"), "deploy",
                    Options(input_size=(96, 128), input_scale=0.25))
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 96, 128]
    assert by_name(net)["data_scale"].scale_param.filler.value == 0.25


def test_header_command_regenerates_the_same_files(tmp_path):
    """The '# options:' line of a scratch folder, run as typed, writes the same four files."""
    folder = generate("synthetic-fcn8s", tmp_path / "a", 4, WIDTH, recipe="scratch",
                      input_scale=1 / 32, input_size=(64, 48), voc_dir="../../my data",
                      train_params={"seed": 0, "batch_size": 2, "mean": (1.0, 2.0, 3.0)},
                      val_params={"seed": 0}, solver={"type": "Adam", "max_iter": 9})
    text = {f.name: f.read_bytes() for f in folder.iterdir()}
    command = text["train.prototxt"].decode("utf-8").splitlines()[1]
    assert command.startswith("# options: python -m netgen generate synthetic-fcn8s ")
    assert "--recipe scratch" in command
    argv = shlex.split(command.split("python -m netgen ", 1)[1])
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    again = tmp_path / "b" / "synthetic-fcn8s"
    assert {f.name: f.read_bytes() for f in again.iterdir()} == text
    net = read_net(again / "train.prototxt")
    assert by_name(net)["data_scale"].scale_param.filler.value == pytest.approx(1 / 32)
    assert read_solver(again / "solver.prototxt").max_iter == 9
