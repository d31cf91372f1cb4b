"""The generated FCN nets against the published reference (shelhamer/fcn.berkeleyvision.org).

The tables below are transcribed from the reference files: voc-fcn8s/deploy.prototxt,
voc-fcn32s/val.prototxt, voc-fcn-alexnet/train.prototxt (with the later net.py's
normalize=True), the net.py files for train nets (dropout in place after relu6/relu7) and the
solver.prototxt files. One line per layer: name type bottoms>tops options [lr=param mults].
"""
import ast
import re

import pytest

from fcn_helpers import summary
from netgen.schema import read_net, read_solver
from netgen.writer import generate

VGG = "lr=1/1,2/0"
# conv1_1 .. relu7 of every FCN-VGG16 deploy / val net (voc-fcn8s/deploy.prototxt).
REF_VGG16_TRUNK = f"""
conv1_1 Convolution data>conv1_1 out=64 pad=100 k=3 s=1 {VGG}
relu1_1 ReLU conv1_1>conv1_1
conv1_2 Convolution conv1_1>conv1_2 out=64 pad=1 k=3 s=1 {VGG}
relu1_2 ReLU conv1_2>conv1_2
pool1 Pooling conv1_2>pool1 MAX k=2 s=2
conv2_1 Convolution pool1>conv2_1 out=128 pad=1 k=3 s=1 {VGG}
relu2_1 ReLU conv2_1>conv2_1
conv2_2 Convolution conv2_1>conv2_2 out=128 pad=1 k=3 s=1 {VGG}
relu2_2 ReLU conv2_2>conv2_2
pool2 Pooling conv2_2>pool2 MAX k=2 s=2
conv3_1 Convolution pool2>conv3_1 out=256 pad=1 k=3 s=1 {VGG}
relu3_1 ReLU conv3_1>conv3_1
conv3_2 Convolution conv3_1>conv3_2 out=256 pad=1 k=3 s=1 {VGG}
relu3_2 ReLU conv3_2>conv3_2
conv3_3 Convolution conv3_2>conv3_3 out=256 pad=1 k=3 s=1 {VGG}
relu3_3 ReLU conv3_3>conv3_3
pool3 Pooling conv3_3>pool3 MAX k=2 s=2
conv4_1 Convolution pool3>conv4_1 out=512 pad=1 k=3 s=1 {VGG}
relu4_1 ReLU conv4_1>conv4_1
conv4_2 Convolution conv4_1>conv4_2 out=512 pad=1 k=3 s=1 {VGG}
relu4_2 ReLU conv4_2>conv4_2
conv4_3 Convolution conv4_2>conv4_3 out=512 pad=1 k=3 s=1 {VGG}
relu4_3 ReLU conv4_3>conv4_3
pool4 Pooling conv4_3>pool4 MAX k=2 s=2
conv5_1 Convolution pool4>conv5_1 out=512 pad=1 k=3 s=1 {VGG}
relu5_1 ReLU conv5_1>conv5_1
conv5_2 Convolution conv5_1>conv5_2 out=512 pad=1 k=3 s=1 {VGG}
relu5_2 ReLU conv5_2>conv5_2
conv5_3 Convolution conv5_2>conv5_3 out=512 pad=1 k=3 s=1 {VGG}
relu5_3 ReLU conv5_3>conv5_3
pool5 Pooling conv5_3>pool5 MAX k=2 s=2
fc6 Convolution pool5>fc6 out=4096 pad=0 k=7 s=1 {VGG}
relu6 ReLU fc6>fc6
fc7 Convolution fc6>fc7 out=4096 pad=0 k=1 s=1 {VGG}
relu7 ReLU fc7>fc7
"""

REF_VOC_FCN8S_DEPLOY = "input Input ->data shape=1x3x500x500" + REF_VGG16_TRUNK + f"""
score_fr Convolution fc7>score_fr out=21 pad=0 k=1 {VGG}
upscore2 Deconvolution score_fr>upscore2 out=21 k=4 s=2 nobias lr=0
score_pool4 Convolution pool4>score_pool4 out=21 pad=0 k=1 {VGG}
score_pool4c Crop score_pool4,upscore2>score_pool4c axis=2 offset=5
fuse_pool4 Eltwise upscore2,score_pool4c>fuse_pool4 SUM
upscore_pool4 Deconvolution fuse_pool4>upscore_pool4 out=21 k=4 s=2 nobias lr=0
score_pool3 Convolution pool3>score_pool3 out=21 pad=0 k=1 {VGG}
score_pool3c Crop score_pool3,upscore_pool4>score_pool3c axis=2 offset=9
fuse_pool3 Eltwise upscore_pool4,score_pool3c>fuse_pool3 SUM
upscore8 Deconvolution fuse_pool3>upscore8 out=21 k=16 s=8 nobias lr=0
score Crop upscore8,data>score axis=2 offset=31
"""

REF_VOC_FCN32S_VAL = "data Python ->data,label layer=VOCSegDataLayer" + REF_VGG16_TRUNK + f"""
score_fr Convolution fc7>score_fr out=21 pad=0 k=1 {VGG}
upscore Deconvolution score_fr>upscore out=21 k=64 s=32 nobias lr=0
score Crop upscore,data>score axis=2 offset=19
loss SoftmaxWithLoss score,label>loss normalize=false ignore=255
"""

REF_VOC_FCN_ALEXNET_TRAIN = """
data Python ->data,label layer=SBDDSegDataLayer
conv1 Convolution data>conv1 out=96 pad=100 k=11 s=4 g=1
relu1 ReLU conv1>conv1
pool1 Pooling conv1>pool1 MAX k=3 s=2
norm1 LRN pool1>norm1 n=5 alpha=0.0001 beta=0.75
conv2 Convolution norm1>conv2 out=256 pad=2 k=5 s=1 g=2
relu2 ReLU conv2>conv2
pool2 Pooling conv2>pool2 MAX k=3 s=2
norm2 LRN pool2>norm2 n=5 alpha=0.0001 beta=0.75
conv3 Convolution norm2>conv3 out=384 pad=1 k=3 s=1 g=1
relu3 ReLU conv3>conv3
conv4 Convolution conv3>conv4 out=384 pad=1 k=3 s=1 g=2
relu4 ReLU conv4>conv4
conv5 Convolution conv4>conv5 out=256 pad=1 k=3 s=1 g=2
relu5 ReLU conv5>conv5
pool5 Pooling conv5>pool5 MAX k=3 s=2
fc6 Convolution pool5>fc6 out=4096 pad=0 k=6 s=1 g=1
relu6 ReLU fc6>fc6
drop6 Dropout fc6>fc6 ratio=0.5
fc7 Convolution fc6>fc7 out=4096 pad=0 k=1 s=1 g=1
relu7 ReLU fc7>fc7
drop7 Dropout fc7>fc7 ratio=0.5
score_fr Convolution fc7>score_fr out=21 pad=0 k=1 lr=1/1,2/0
upscore Deconvolution score_fr>upscore out=21 k=63 s=32 nobias lr=0
score Crop upscore,data>score axis=2 offset=18
loss SoftmaxWithLoss score,label>loss normalize=true ignore=255
"""


def lines(table: str) -> list[str]:
    return [line.strip() for line in table.strip().splitlines() if line.strip()]


def summaries(path) -> list[str]:
    return [summary(layer) for layer in read_net(path).layer]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The reference VOC models, written by the writer and read back from disk."""
    out = tmp_path_factory.mktemp("models")
    names = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet")
    return {name: generate(name, out) for name in names}


def test_voc_fcn8s_deploy_matches_reference_layer_for_layer(models):
    assert summaries(models["voc-fcn8s"] / "deploy.prototxt") == lines(REF_VOC_FCN8S_DEPLOY)


def test_voc_fcn32s_val_matches_reference_layer_for_layer(models):
    assert summaries(models["voc-fcn32s"] / "val.prototxt") == lines(REF_VOC_FCN32S_VAL)


def test_voc_fcn_alexnet_train_matches_reference_layer_for_layer(models):
    assert summaries(models["voc-fcn-alexnet"] / "train.prototxt") == lines(REF_VOC_FCN_ALEXNET_TRAIN)


def test_train_nets_add_in_place_dropout_after_relu6_and_relu7(models):
    train = summaries(models["voc-fcn32s"] / "train.prototxt")
    val = summaries(models["voc-fcn32s"] / "val.prototxt")
    assert train[train.index("relu6 ReLU fc6>fc6") + 1] == "drop6 Dropout fc6>fc6 ratio=0.5"
    assert train[train.index("relu7 ReLU fc7>fc7") + 1] == "drop7 Dropout fc7>fc7 ratio=0.5"
    assert [s for s in train if "Dropout" not in s][1:] == val[1:]
    assert train[0] == "data Python ->data,label layer=SBDDSegDataLayer"


# Crop offsets as published; here read from the generated files of every phase.
REF_OFFSETS = {
    "voc-fcn32s": {"score": 19},
    "voc-fcn16s": {"score_pool4c": 5, "score": 27},
    "voc-fcn8s": {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
    "voc-fcn8s-atonce": {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
    "voc-fcn-alexnet": {"score": 18},
}


@pytest.mark.parametrize("name", REF_OFFSETS)
@pytest.mark.parametrize("phase", ["train", "val", "deploy"])
def test_crop_offsets_equal_the_reference(models, name, phase):
    net = read_net(models[name] / f"{phase}.prototxt")
    crops = {l.name: (l.crop_param.axis, list(l.crop_param.offset)) for l in net.layer if l.type == "Crop"}
    assert crops == {k: (2, [v]) for k, v in REF_OFFSETS[name].items()}


def test_alexnet_upscore_is_kernel_63_stride_32(models):
    up = next(l for l in read_net(models["voc-fcn-alexnet"] / "deploy.prototxt").layer if l.name == "upscore")
    assert (up.convolution_param.kernel_size[0], up.convolution_param.stride[0]) == (63, 32)


def test_at_once_scales_skips_with_fixed_constants(models):
    net = summaries(models["voc-fcn8s-atonce"] / "deploy.prototxt")
    assert "scale_pool4 Scale pool4>scale_pool4 constant=0.01 lr=0" in net
    assert "scale_pool3 Scale pool3>scale_pool3 constant=0.0001 lr=0" in net
    assert f"score_pool4 Convolution scale_pool4>score_pool4 out=21 pad=0 k=1 {VGG}" in net
    assert f"score_pool3 Convolution scale_pool3>score_pool3 out=21 pad=0 k=1 {VGG}" in net
    # the reference net.py order: scale right before the score layer it feeds
    assert net.index("scale_pool4 Scale pool4>scale_pool4 constant=0.01 lr=0") == \
        [s.split()[0] for s in net].index("score_pool4") - 1


def test_fcn16s_head(models):
    net = summaries(models["voc-fcn16s"] / "deploy.prototxt")
    assert net[-5:] == lines(f"""
        score_pool4 Convolution pool4>score_pool4 out=21 pad=0 k=1 {VGG}
        score_pool4c Crop score_pool4,upscore2>score_pool4c axis=2 offset=5
        fuse_pool4 Eltwise upscore2,score_pool4c>fuse_pool4 SUM
        upscore16 Deconvolution fuse_pool4>upscore16 out=21 k=32 s=16 nobias lr=0
        score Crop upscore16,data>score axis=2 offset=27""")


def param_str(net, layer="data"):
    return ast.literal_eval(next(l for l in net.layer if l.name == layer).python_param.param_str)


def test_voc_data_layers_carry_the_reference_keys(models):
    train = param_str(read_net(models["voc-fcn8s"] / "train.prototxt"))
    val = param_str(read_net(models["voc-fcn8s"] / "val.prototxt"))
    mean = (104.00699, 116.66877, 122.67892)
    assert train == dict(sbdd_dir="../../data/sbdd/dataset", split="train", mean=mean, seed=1337,
                         randomize=True)
    assert val == dict(voc_dir="../../data/pascal/VOC2011", split="seg11valid", mean=mean,
                       seed=1337, randomize=False)


# (base_lr, momentum, iter_size, max_iter, snapshot) from each reference solver.prototxt
REF_SOLVERS = {
    "voc-fcn32s": (1e-10, 0.99, 1, 100000, 4000),
    "voc-fcn16s": (1e-12, 0.99, 1, 100000, 4000),
    "voc-fcn8s": (1e-14, 0.99, 1, 100000, 4000),
    "voc-fcn8s-atonce": (1e-10, 0.99, 1, 300000, 4000),
    "voc-fcn-alexnet": (1e-4, 0.9, 20, 100000, 4000),
    "pascalcontext-fcn32s": (1e-10, 0.99, 1, 300000, 4000),
    "pascalcontext-fcn16s": (1e-12, 0.99, 1, 300000, 4000),
    "pascalcontext-fcn8s": (1e-14, 0.99, 1, 300000, 4000),
    "siftflow-fcn32s": (1e-10, 0.99, 1, 300000, None),
    "siftflow-fcn16s": (1e-12, 0.99, 1, 300000, None),
    "nyud-fcn32s-hha": (1e-10, 0.99, 1, 300000, 2000),
    "nyud-fcn32s-color-hha": (1e-12, 0.99, 1, 300000, 2000),
}


@pytest.mark.parametrize("name", REF_SOLVERS)
def test_solver_matches_reference_recipe(tmp_path, name):
    solver = read_solver(generate(name, tmp_path) / "solver.prototxt")
    base_lr, momentum, iter_size, max_iter, snapshot = REF_SOLVERS[name]
    assert solver.base_lr == pytest.approx(base_lr, rel=1e-6)
    assert solver.momentum == pytest.approx(momentum, rel=1e-6)
    assert (solver.iter_size, solver.max_iter) == (iter_size, max_iter)
    if snapshot is not None:  # SIFT Flow's reference never snapshots; fcnkit uses 4000
        assert solver.snapshot == snapshot
    assert solver.weight_decay == pytest.approx(0.0005)
    assert (solver.lr_policy, solver.display, solver.average_loss) == ("fixed", 20, 20)
    assert solver.test_interval == 999999999 and not solver.test_initialization
    assert solver.snapshot_prefix == "snapshot/train"
    # nets named relative to the solver file, which sits beside them
    assert (solver.train_net, list(solver.test_net)) == ("train.prototxt", ["val.prototxt"])
    assert (tmp_path / name / solver.train_net).is_file()


def test_siftflow_has_semantic_and_geometric_heads_as_reference(tmp_path):
    folder = generate("siftflow-fcn16s", tmp_path)
    train = [summary(l) for l in read_net(folder / "train.prototxt").layer]
    assert train[0] == "data Python ->data,sem,geo layer=SIFTFlowSegDataLayer"
    head = lines(f"""
        score_fr_sem Convolution fc7>score_fr_sem out=33 pad=0 k=1 {VGG}
        upscore2_sem Deconvolution score_fr_sem>upscore2_sem out=33 k=4 s=2 nobias lr=0
        score_pool4_sem Convolution pool4>score_pool4_sem out=33 pad=0 k=1 {VGG}
        score_pool4_semc Crop score_pool4_sem,upscore2_sem>score_pool4_semc axis=2 offset=5
        fuse_pool4_sem Eltwise upscore2_sem,score_pool4_semc>fuse_pool4_sem SUM
        upscore16_sem Deconvolution fuse_pool4_sem>upscore16_sem out=33 k=32 s=16 nobias lr=0
        score_sem Crop upscore16_sem,data>score_sem axis=2 offset=27
        loss SoftmaxWithLoss score_sem,sem>loss normalize=false ignore=255
        score_fr_geo Convolution fc7>score_fr_geo out=3 pad=0 k=1 {VGG}
        upscore2_geo Deconvolution score_fr_geo>upscore2_geo out=3 k=4 s=2 nobias lr=0
        score_pool4_geo Convolution pool4>score_pool4_geo out=3 pad=0 k=1 {VGG}
        score_pool4_geoc Crop score_pool4_geo,upscore2_geo>score_pool4_geoc axis=2 offset=5
        fuse_pool4_geo Eltwise upscore2_geo,score_pool4_geoc>fuse_pool4_geo SUM
        upscore16_geo Deconvolution fuse_pool4_geo>upscore16_geo out=3 k=32 s=16 nobias lr=0
        score_geo Crop upscore16_geo,data>score_geo axis=2 offset=27
        loss_geo SoftmaxWithLoss score_geo,geo>loss_geo normalize=false ignore=255""")
    assert train[-len(head):] == head
    assert param_str(read_net(folder / "val.prototxt")) == dict(
        siftflow_dir="../../data/sift-flow", split="test", seed=1337, randomize=False)
    deploy = [summary(l) for l in read_net(folder / "deploy.prototxt").layer]
    assert [s.split()[0] for s in deploy if "Loss" in s] == []
    assert {"score_sem", "score_geo"} <= {s.split()[0] for s in deploy}


def test_nyud_color_hha_is_two_streams_fused_late(tmp_path):
    folder = generate("nyud-fcn32s-color-hha", tmp_path)
    net = read_net(folder / "train.prototxt")
    s = [summary(l) for l in net.layer]
    assert s[0] == "color Python ->color,hha,label layer=NYUDSegDataLayer"
    assert param_str(net, "color")["tops"] == ["color", "hha", "label"]
    assert f"conv1_1color Convolution color>conv1_1color out=64 pad=100 k=3 s=1 {VGG}" in s
    assert f"conv1_1hha Convolution hha>conv1_1hha out=64 pad=100 k=3 s=1 {VGG}" in s
    assert s[-4:] == lines("""
        score_fused Eltwise score_frcolor,score_frhha>score_fused SUM coeff=0.5,0.5
        upscore Deconvolution score_fused>upscore out=40 k=64 s=32 nobias lr=0
        score Crop upscore,color>score axis=2 offset=19
        loss SoftmaxWithLoss score,label>loss normalize=false ignore=255""")
    deploy = read_net(folder / "deploy.prototxt")
    assert summary(deploy.layer[0]) == "input Input ->color,hha shape=1x3x500x500 shape=1x3x500x500"


def test_nyud_color_d_concatenates_four_channels_into_a_renamed_conv1_1(tmp_path):
    folder = generate("nyud-fcn32s-color-d", tmp_path)
    s = [summary(l) for l in read_net(folder / "train.prototxt").layer]
    assert s[:3] == lines(f"""
        color Python ->color,depth,label layer=NYUDSegDataLayer
        data Concat color,depth>data
        conv1_1_bgrd Convolution data>conv1_1_bgrd out=64 pad=100 k=3 s=1 {VGG}""")
    deploy = read_net(folder / "deploy.prototxt")
    assert summary(deploy.layer[0]) == "input Input ->color,depth shape=1x3x500x500 shape=1x1x500x500"


@pytest.mark.parametrize("name, tops", [("nyud-fcn32s-color", ["color", "label"]),
                                        ("nyud-fcn32s-hha", ["hha", "label"])])
def test_nyud_single_modality_reads_it_as_data(tmp_path, name, tops):
    net = read_net(generate(name, tmp_path) / "train.prototxt")
    assert list(net.layer[0].top) == ["data", "label"]
    assert param_str(net)["tops"] == tops
    assert re.fullmatch(r"conv1_1 Convolution data>conv1_1 .*", summary(net.layer[1]))
