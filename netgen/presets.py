"""Datasets, nets, solver values and training recipes as data; a model is `<dataset>-<net>`.

The published reference models (shelhamer/fcn.berkeleyvision.org folder names) are the
combinations listed in PUBLISHED; any other dataset x net pair is built the same way.

Data paths in param_str are relative to the model folder (models/<name>/), the folder the
solver is run from, and point at a `data/` folder beside `models/`, as the reference layout:
data/pascal/VOC2011, data/sbdd/dataset, data/pascal-context, data/sift-flow, data/nyud, ...

Solver values are the reference solver.prototxt values. Where the reference is silent or
stale: test_iter is the size of the val split the val net reads (voc-fcn32s and siftflow
reference files carry 1111, the count of a different list), SIFT Flow snapshots every 4000
iterations (reference: no snapshots), and the nets without a published solver
(siftflow-fcn8s, nyud-fcn32s-color, nyud-fcn32s-color-d, new datasets) follow the rule of
their stride: base_lr 1e-10 (32s), 1e-12 (16s), 1e-14 (8s), 1e-10 (8s at-once).

Recipes (RECIPES) apply to any model: "reference" is the published setup above; "scratch"
trains from zero (no ImageNet weights): MSRA trunk, loss averaged over valid pixels, no dropout,
the mean-subtracted input scaled by 1/64 to about unit range, Adam at 1e-3.

`Model.data_spec` can also point train/val at a VOC-layout folder (JPEGImages,
SegmentationClass, ImageSets/Segmentation/{train,val}.txt), such as the one
solvers.data.synthetic writes, instead of the dataset's own data layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .errors import FcnkitError
from .fcn import REFERENCE, DataSpec, Head, Recipe

VOC_MEAN = (104.00699, 116.66877, 122.67892)  # BGR ImageNet mean of the FCN VGG models
SEED = 1337


@dataclass(frozen=True)
class Dataset:
    """A dataset preset: heads (classes per label top), train/val data layers, solver sizes."""

    name: str
    description: str
    heads: tuple[Head, ...]
    train: DataSpec
    val: DataSpec
    val_size: int                       # items in the val split: solver test_iter
    max_iter: int = 300000
    snapshot: int = 4000
    modalities: Mapping[str, int] = field(default_factory=dict)  # input top -> channels
    default_modalities: tuple[str, ...] = ()
    tops_param: bool = False            # the layer is told its tops in param_str 'tops'
    class_param: tuple[str, int] | None = None  # param_str key given (classes + offset)
    class_choices: tuple[int, ...] = ()  # class counts the data layer supports (empty: any)

    @property
    def num_classes(self) -> int:
        return self.heads[0].num_classes


@dataclass(frozen=True)
class Net:
    """A net preset: architecture, stride, inputs and the solver values it changes."""

    name: str
    arch: str                           # "vgg16" | "alexnet"
    stride: str
    modalities: tuple[str, ...] = ()    # dataset modalities read (empty: the dataset's default)
    fusion: str = "early"
    first_conv: str = "conv1_1"
    solver: Mapping[str, Any] = field(default_factory=dict)


def _split_pair(layer_train: str, layer_val: str, common: Mapping[str, Any], train: Mapping[str, Any],
                val: Mapping[str, Any]) -> tuple[DataSpec, DataSpec]:
    """Train and val data layers sharing keys; train shuffles, val reads in order."""
    def params(own: Mapping[str, Any], randomize: bool) -> dict[str, Any]:
        merged = {**common, **own, "seed": SEED, "randomize": randomize}
        return dict(sorted(merged.items(), key=lambda kv: not kv[0].endswith("_dir")))  # dirs first

    return DataSpec(layer_train, params(train, True)), DataSpec(layer_val, params(val, False))


def _simple(name: str, description: str, classes: int, layer: str, common: Mapping[str, Any],
            train_split: str, val_split: str, val_size: int, **kw: Any) -> Dataset:
    train, val = _split_pair(layer, layer, common, {"split": train_split}, {"split": val_split})
    return Dataset(name, description, (Head(classes),), train, val, val_size, **kw)


_VOC_TRAIN, _VOC_VAL = _split_pair(
    "SBDDSegDataLayer", "VOCSegDataLayer", {"mean": VOC_MEAN},
    {"sbdd_dir": "../../data/sbdd/dataset", "split": "train"},
    {"voc_dir": "../../data/pascal/VOC2011", "split": "seg11valid"})
_SIFT_TRAIN, _SIFT_VAL = _split_pair(
    "SIFTFlowSegDataLayer", "SIFTFlowSegDataLayer", {"siftflow_dir": "../../data/sift-flow"},
    {"split": "trainval"}, {"split": "test"})
_NYUD_TRAIN, _NYUD_VAL = _split_pair(
    "NYUDSegDataLayer", "NYUDSegDataLayer", {"nyud_dir": "../../data/nyud"},
    {"split": "trainval"}, {"split": "test"})
_SYNTH_COMMON = {"n_classes": 5, "size": (64, 64)}

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("voc", "PASCAL VOC 2011 segmentation, 20 classes + background; trains on SBD "
            "train, validates on seg11valid", (Head(21),), _VOC_TRAIN, _VOC_VAL, 736,
            max_iter=100000),
    _simple("pascalcontext", "PASCAL-Context, 59 classes + background", 60,
            "PASCALContextSegDataLayer",
            {"voc_dir": "../../data/pascal", "context_dir": "../../data/pascal-context"},
            "train", "val", 5105),
    Dataset("siftflow", "SIFT Flow: 33 semantic + 3 geometric classes, two heads",
            (Head(33, "_sem", "sem", "loss"), Head(3, "_geo", "geo", "loss_geo")),
            _SIFT_TRAIN, _SIFT_VAL, 200),
    Dataset("nyud", "NYUDv2, 40 classes; color, depth and HHA inputs", (Head(40),),
            _NYUD_TRAIN, _NYUD_VAL, 654, snapshot=2000,
            modalities={"color": 3, "depth": 1, "hha": 3}, default_modalities=("color",),
            tops_param=True),
    _simple("ade20k", "ADE20K (MIT Scene Parsing), 150 classes", 150, "ADE20KSegDataLayer",
            {"ade_dir": "../../data/ade20k/ADEChallengeData2016"}, "train", "val", 2000),
    _simple("cityscapes", "Cityscapes fine annotations, 19 train ids", 19,
            "CityscapesSegDataLayer", {"cityscapes_dir": "../../data/cityscapes"},
            "train", "val", 500),
    # KITTI road and SYNTHIA have no official val split: 'val' reads <dir>/val.txt.
    _simple("kitti-road", "KITTI road: not road / road", 2, "KITTIRoadSegDataLayer",
            {"kitti_dir": "../../data/kitti-road"}, "train", "val", 100),
    _simple("synthia", "SYNTHIA RAND-CITYSCAPES on Cityscapes' 19 train ids (or 16)", 19,
            "SYNTHIASegDataLayer",
            {"synthia_dir": "../../data/synthia/RAND_CITYSCAPES", "classes": 19},
            "train", "val", 100, class_param=("classes", 0), class_choices=(16, 19)),
    Dataset("synthetic", "fcnkit's synthetic shapes, rendered in memory: 5 classes + "
            "background, 64x64", (Head(6),),
            *_split_pair("SyntheticSegDataLayer", "SyntheticSegDataLayer", _SYNTH_COMMON,
                         {"split": "train", "length": 200}, {"split": "val", "length": 50}),
            50, class_param=("n_classes", -1)),
)}

NETS: dict[str, Net] = {n.name: n for n in (
    Net("fcn32s", "vgg16", "32s"),
    Net("fcn16s", "vgg16", "16s"),
    Net("fcn8s", "vgg16", "8s"),
    Net("fcn8s-atonce", "vgg16", "8s-atonce", solver={"max_iter": 300000}),
    Net("fcn-alexnet", "alexnet", "32s"),
    Net("fcn32s-color", "vgg16", "32s", ("color",)),
    Net("fcn32s-hha", "vgg16", "32s", ("hha",)),
    Net("fcn32s-color-d", "vgg16", "32s", ("color", "depth"), "early", "conv1_1_bgrd"),
    Net("fcn32s-color-hha", "vgg16", "32s", ("color", "hha"), "late",
        solver={"base_lr": 1e-12}),
)}

PUBLISHED = (
    "voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet",
    "pascalcontext-fcn32s", "pascalcontext-fcn16s", "pascalcontext-fcn8s",
    "siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s",
    "nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-d", "nyud-fcn32s-color-hha",
)
# What `python -m netgen` writes into models/: the published set, then the staged
# 32s -> 16s -> 8s nets for the datasets fcnkit adds.
DEFAULT_SET = PUBLISHED + tuple(
    f"{d}-{n}" for d in ("ade20k", "cityscapes", "kitti-road", "synthia", "synthetic")
    for n in ("fcn32s", "fcn16s", "fcn8s"))

# Solver recipes: shared values, then per architecture and stride.
_SOLVER_COMMON: dict[str, Any] = dict(
    test_interval=999999999,  # make the test net, but test from the solve script
    display=20, average_loss=20, lr_policy="fixed", weight_decay=0.0005,
    snapshot_prefix="snapshot/train", test_initialization=False)
ARCH_SOLVER: dict[str, dict[str, Any]] = {
    # unnormalised loss (a sum over ~250k pixels): tiny rates, high momentum, batch 1
    "vgg16": dict(momentum=0.99, iter_size=1),
    # loss normalised over valid pixels: usual rate, momentum, 20 images accumulated
    "alexnet": dict(base_lr=1e-4, momentum=0.9, iter_size=20),
}
STRIDE_LR = {"32s": 1e-10, "16s": 1e-12, "8s": 1e-14, "8s-atonce": 1e-10}


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    REFERENCE,
    Recipe("scratch", "training from zero: MSRA trunk, loss over valid pixels, no dropout, "
           "input x 1/64, Adam 1e-3",
           weight_filler="msra", loss_normalization="VALID", dropout=False, input_scale=1 / 64,
           solver=dict(type="Adam", base_lr=1e-3, momentum=0.9, momentum2=0.999, delta=1e-8,
                       lr_policy="fixed", weight_decay=1e-5, iter_size=1, display=50)),
)}


def resolve_recipe(name: str) -> Recipe:
    """The recipe preset called `name`."""
    if name not in RECIPES:
        raise FcnkitError(f"unknown recipe {name!r}: one of {', '.join(RECIPES)}")
    return RECIPES[name]


# A VOC-layout folder read in place of a dataset's own layers (Model.data_spec voc_dir).
VOC_LAYOUT = ("VOCSegDataLayer", {"mean": VOC_MEAN}, {"split": "train"}, {"split": "val"})


@dataclass(frozen=True)
class Model:
    """A dataset x net pair, under its folder name."""

    name: str
    dataset: Dataset
    net: Net

    @property
    def published(self) -> bool:
        return self.name in PUBLISHED

    @property
    def inputs(self) -> tuple[tuple[str, int], ...]:
        """(top, channels) per net input: one modality reads as `data`, several by name."""
        mods = self.net.modalities or self.dataset.default_modalities
        if not mods:
            return (("data", 3),)
        chans = [self.dataset.modalities[m] for m in mods]
        if len(mods) == 1:
            return (("data", chans[0]),)
        return tuple(zip(mods, chans))

    def heads(self, num_classes: int | None = None) -> tuple[Head, ...]:
        heads = self.dataset.heads
        if num_classes is None or num_classes == heads[0].num_classes:
            return heads
        if len(heads) > 1:
            raise FcnkitError(f"{self.name}: dataset {self.dataset.name} has {len(heads)} heads "
                              f"({' + '.join(str(h.num_classes) for h in heads)} classes); "
                              "--classes applies to single-head datasets only")
        return (replace(heads[0], num_classes=num_classes),)

    def data_spec(self, phase: str, num_classes: int | None = None,
                  voc_dir: str | None = None) -> DataSpec:
        """The data layer of the train or val net, told its tops / classes where it needs.

        voc_dir: read the VOC-layout folder there (relative to the model folder) with splits
        train / val instead; single-input, single-head datasets only.
        """
        ds = self.dataset
        if voc_dir is not None:
            if ds.tops_param or len(ds.heads) > 1 or len(self.inputs) > 1:
                raise FcnkitError(f"--voc-dir: {self.name} reads several inputs or labels; a "
                                  "VOC-layout folder has one image and one label per item")
            layer, common, train, val = VOC_LAYOUT
            pair = _split_pair(layer, layer, {"voc_dir": voc_dir, **common}, train, val)
            return pair[0] if phase == "train" else pair[1]
        spec = ds.train if phase == "train" else ds.val
        params = dict(spec.params)
        if ds.tops_param:
            mods = self.net.modalities or ds.default_modalities
            params["tops"] = [*mods, *dict.fromkeys(h.label for h in ds.heads)]
        if ds.class_param and num_classes is not None:
            key, offset = ds.class_param
            params[key] = num_classes + offset
        return replace(spec, params=params)

    def solver(self, recipe: Recipe = REFERENCE) -> dict[str, Any]:
        """Solver fields (without net paths): the reference values for this model, then the
        recipe's."""
        net, ds = self.net, self.dataset
        return {**_SOLVER_COMMON, "base_lr": STRIDE_LR[net.stride], **ARCH_SOLVER[net.arch],
                "test_iter": ds.val_size, "max_iter": ds.max_iter, "snapshot": ds.snapshot,
                **net.solver, **recipe.solver}


def _parse(name: str) -> tuple[str, str] | None:
    for d in sorted(DATASETS, key=len, reverse=True):
        if name.startswith(d + "-") and name[len(d) + 1:] in NETS:
            return d, name[len(d) + 1:]
    return None


def resolve(name: str, dataset: str | None = None) -> Model:
    """The model called `name` (<dataset>-<net>), optionally moved onto another dataset."""
    parsed = _parse(name)
    if parsed is None:
        raise FcnkitError(f"unknown model {name!r}: expected <dataset>-<net> with dataset one of "
                          f"{', '.join(DATASETS)} and net one of {', '.join(NETS)} "
                          "(python -m netgen list)")
    ds_name, net_name = parsed
    if dataset is not None:
        if dataset not in DATASETS:
            raise FcnkitError(f"unknown dataset {dataset!r}: one of {', '.join(DATASETS)}")
        ds_name = dataset
    ds, net = DATASETS[ds_name], NETS[net_name]
    missing = [m for m in net.modalities if m not in ds.modalities]
    if missing:
        raise FcnkitError(f"net {net_name} reads input {missing[0]!r}, which dataset {ds_name} "
                          "does not have")
    return Model(f"{ds_name}-{net_name}", ds, net)


def check_classes(model: Model, num_classes: int | None) -> None:
    """Refuse class counts the model or its data layer cannot take."""
    if num_classes is None:
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise FcnkitError(f"--classes must be an integer >= 2 (a softmax over one class "
                          f"cannot learn), not {num_classes!r}")
    choices = model.dataset.class_choices
    if choices and num_classes not in choices:
        raise FcnkitError(f"dataset {model.dataset.name} supports "
                          f"{' or '.join(map(str, choices))} classes, not {num_classes}")
    if model.dataset.class_param and num_classes + model.dataset.class_param[1] < 1:
        raise FcnkitError(f"dataset {model.dataset.name} needs at least "
                          f"{1 - model.dataset.class_param[1]} classes, not {num_classes}")
    model.heads(num_classes)
