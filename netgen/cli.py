"""`python -m netgen`: write FCN model folders, list the presets, explain a net's geometry.

    python -m netgen                      regenerate the default set into models/
    python -m netgen list                 models, nets, dataset presets and recipes
    python -m netgen generate voc-fcn8s --classes 5 --width 0.25 --out /tmp/nets
    python -m netgen generate synthetic-fcn32s --recipe scratch --width 0.0625 \
        --voc-dir ../../data --input-size 128x128 --solver max_iter=1500
    python -m netgen explain models/voc-fcn8s/deploy.prototxt --size 375x500
    python -m netgen draw models/voc-fcn8s/deploy.prototxt fcn8s.svg --size 500x500
"""
from __future__ import annotations

import argparse

from .errors import ArgumentParser, FcnkitError, cli_entry, size_arg
from .fcn import DEFAULT_SIZE
from .presets import DATASETS, DEFAULT_SET, NETS, PUBLISHED, RECIPES, resolve
from .writer import DATA_MODES, generate, generate_all, parse_value

DESCRIPTION = """\
Generate Caffe prototxts for Fully Convolutional Networks (FCN-32s/16s/8s/8s-at-once on VGG16,
FCN-AlexNet). A model is <dataset>-<net>, e.g. voc-fcn8s; each model folder gets
train.prototxt, val.prototxt, deploy.prototxt and solver.prototxt. Without a command, the
default set (the published reference models and fcnkit's additions) is written into models/.
A recipe (--recipe) sets the training choices: 'reference' as published, 'scratch' to train
from zero."""


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. max_iter=1500, not {text!r}")
    return key.strip(), parse_value(value)


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m netgen", description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="models", metavar="DIR",
                   help="where the default set goes (default: models)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="list models, nets, dataset presets and recipes",
                   description="List the published models, every net, every dataset preset "
                               "and every training recipe.")
    g = sub.add_parser("generate", help="write one model folder",
                       description="Write DIR/NAME/{train,val,deploy,solver}.prototxt, all files "
                                   "or none.")
    g.add_argument("name", metavar="NAME",
                   help="model <dataset>-<net>, e.g. voc-fcn8s, cityscapes-fcn8s-atonce")
    g.add_argument("--classes", type=int, metavar="N",
                   help="number of classes (default: the dataset's); single-head datasets only")
    g.add_argument("--dataset", metavar="D", choices=list(DATASETS),
                   help=f"put the net on this dataset preset instead: {', '.join(DATASETS)}")
    g.add_argument("--width", type=float, default=1.0, metavar="W",
                   help="multiply every hidden channel count by W (> 0; default 1)")
    g.add_argument("--out", default="models", metavar="DIR",
                   help="parent folder of the model folder (default: models)")
    g.add_argument("--data", choices=DATA_MODES, default="python",
                   help="train/val input: 'python' data layers (default) or 'input' layers "
                        "fed directly")
    g.add_argument("--recipe", choices=list(RECIPES), default="reference",
                   help="training recipe: fillers, loss normalisation, dropout, input scale, "
                        "solver (default: reference; see list)")
    g.add_argument("--input-scale", type=float, metavar="S",
                   help="fixed scale of the input before the first convolution (replaces the "
                        "recipe's)")
    g.add_argument("--input-size", type=size_arg, default=DEFAULT_SIZE, metavar="HxW",
                   help="height x width of Input layers (default 500x500)")
    g.add_argument("--voc-dir", metavar="DIR",
                   help="train/val read this VOC-layout folder (splits train, val), relative "
                        "to the model folder")
    for phase in ("train", "val"):
        g.add_argument(f"--{phase}-param", type=_key_value, action="append", default=[],
                       metavar="KEY=VALUE", help=f"set a param_str key of the {phase} data "
                                                 "layer (repeatable)")
    g.add_argument("--solver", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="set a solver field after the recipe's, e.g. "
                                             "max_iter=1500 (repeatable)")
    e = sub.add_parser("explain", help="per-layer shapes, strides and offsets of a net",
                       description="Explain a net's geometry for one input size: output shape, "
                                   "receptive field and alignment of every layer.")
    e.add_argument("prototxt", metavar="PROTOTXT", help="net definition to explain")
    e.add_argument("--size", type=size_arg, default=(500, 500), metavar="HxW",
                   help="input height x width (default 500x500)")
    d = sub.add_parser("draw", help="picture of a net (graphviz): layers, windows, sizes, crops",
                       description="Draw a net as a graph: a box per layer with its type, "
                                   "kernel/stride/pad and output size, Crop edges labelled with "
                                   "their offsets. Renders with graphviz's `dot` "
                                   "(apt-get install graphviz); .dot writes the DOT text.")
    d.add_argument("prototxt", metavar="PROTOTXT", help="net definition to draw")
    d.add_argument("out", metavar="OUT", help="picture to write: .svg, .png, .pdf or .dot")
    d.add_argument("--size", type=size_arg, metavar="HxW",
                   help="input height x width for the output sizes (default: the net's "
                        "declared input shape)")
    d.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST",
                   help="layers of this phase (default TEST)")
    d.add_argument("--rankdir", choices=("TB", "LR"), default="TB",
                   help="top to bottom (default) or left to right")
    return p


def _list() -> None:
    print("models written by default (published reference models marked *):")
    for name in DEFAULT_SET:
        m = resolve(name)
        classes = " + ".join(str(h.num_classes) for h in m.dataset.heads)
        mark = "*" if name in PUBLISHED else " "
        print(f" {mark} {name:24} {m.net.arch:8} {m.net.stride:10} {classes} classes")
    print("\nnets (combine with any dataset as <dataset>-<net>):")
    for net in NETS.values():
        inputs = f" inputs {'+'.join(net.modalities)} ({net.fusion})" if len(net.modalities) > 1 \
            else (f" input {net.modalities[0]}" if net.modalities else "")
        print(f"   {net.name:18} {net.arch} {net.stride}{inputs}")
    print("\ndataset presets:")
    for ds in DATASETS.values():
        print(f"   {ds.name:14} {ds.description}")
    print("\nrecipes (--recipe):")
    for recipe in RECIPES.values():
        print(f"   {recipe.name:14} {recipe.description}")


def _explain(path: str, size: tuple[int, int]) -> None:
    from .explain import explain  # imported on use: the other commands do not need it
    from .legacy import upgrade_net
    from .schema import locate_layer_error, read_net

    net = read_net(path)
    try:
        report = explain(upgrade_net(net), size)  # legacy V1 nets (published VGG16) too
    except FcnkitError as e:
        raise locate_layer_error(path, e) from None
    print(report)


def _draw(path: str, out: str, size: tuple[int, int] | None, phase: str, rankdir: str) -> None:
    from .draw import draw  # imported on use: graphviz is needed by this command only
    from .legacy import upgrade_net
    from .schema import locate_layer_error, read_net

    net = upgrade_net(read_net(path))  # legacy V1 nets (published VGG16) too
    try:
        written = draw(net, out, size, phase, rankdir)
    except FcnkitError as e:
        raise locate_layer_error(path, e) from None
    print(f"wrote {written}")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        for folder in generate_all(args.out):
            print(f"wrote {folder}")
    elif args.command == "list":
        _list()
    elif args.command == "generate":
        folder = generate(args.name, args.out, args.classes, args.width, dataset=args.dataset,
                          data=args.data, recipe=args.recipe, input_scale=args.input_scale,
                          input_size=args.input_size, voc_dir=args.voc_dir,
                          train_params=dict(args.train_param), val_params=dict(args.val_param),
                          solver=dict(args.solver))
        print(f"wrote {folder}")
    elif args.command == "draw":
        _draw(args.prototxt, args.out, args.size, args.phase, args.rankdir)
    else:
        _explain(args.prototxt, args.size)
    return 0
