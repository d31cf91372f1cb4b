"""`python -m surgery`: inspect, convert and operate on caffemodels from the shell.

Subcommands: info, convert, transplant, interp, expand-score, stage-init, export. Every output path is
checked before the work starts and written atomically; a user error prints one line, exit 2.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from netgen.errors import ArgumentParser, FcnkitError, cli_entry, size_arg
from netgen.fileio import check_writable
from netgen.proto import caffe_pb2
from netgen.schema import read_net

from .caffemodel import Weights, check_layers_in, load_weights, save_weights
from .classifiers import detect
from .fillers import Filler
from .interp import interp
from netgen.legacy import downgrade_net
from .score_expand import expand_score
from .stage import stage_init
from .transplant import transplant

REPO = Path(__file__).resolve().parents[1]
# Classifier family -> (reference model folder under models/, netgen.fcn builder).
DEFAULT_TARGETS = {"vgg16": ("voc-fcn32s", "fcn_vgg16"), "caffenet": ("voc-fcn-alexnet",
                                                                       "fcn_alexnet")}
FAMILY_NAMES = {"vgg16": "VGG16", "vgg19": "VGG19", "caffenet": "CaffeNet/AlexNet"}
DESCRIPTION = """\
Inspect, convert and operate on Caffe weights (binary .caffemodel, legacy V1 or current, and
HDF5 .caffemodel.h5) with numpy alone, no compiled Caffe.

examples:
  python -m surgery info VGG_ILSVRC_16_layers.caffemodel
  python -m surgery transplant VGG_ILSVRC_16_layers.caffemodel --out vgg16-fcn32s.caffemodel
  python -m surgery stage-init fcn32s.caffemodel --net models/voc-fcn16s/train.prototxt \\
      --out fcn16s-init.caffemodel
  python -m surgery convert fcn8s.caffemodel fcn8s.caffemodel.h5
  python -m surgery export models/voc-fcn8s/deploy.prototxt fcn8s.caffemodel fcn8s.onnx"""


def _format_for(path: str, given: str | None) -> str:
    if given:
        return given
    return "hdf5" if str(path).endswith((".h5", ".hdf5")) else "binary"


def _describe(weights: Weights) -> str:
    if weights.net is None:
        return "HDF5 caffemodel"
    kind = "legacy V1 `layers`" if weights.net.layers else "current `layer` format"
    name = f', net "{weights.net.name}"' if weights.net.name else ""
    return f"binary caffemodel, {kind}{name}"


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _looks_like(weights: Weights) -> str:
    """'VGG16 classifier', 'VGG16 trunk, fully convolutional' or 'unrecognised net'."""
    family = detect(weights)
    if family is None:
        return "unrecognised net"
    # fc6 as an InnerProduct (2-d, or typed so with legacy 1x1xOxI dims) is a classifier
    inner = weights.types.get("fc6") == "InnerProduct" or weights["fc6"][0].ndim == 2
    return f"{FAMILY_NAMES[family]} {'classifier' if inner else 'trunk, fully convolutional'}"


def _info(args) -> None:
    weights = load_weights(args.model)
    size = Path(args.model).stat().st_size
    print(f"{args.model}: {_describe(weights)}, {size / 1e6:.1f} MB")
    if detect(weights):
        print(f"looks like: {_looks_like(weights)}")
    rows = [(name, weights.types.get(name, "") or "?",
             ", ".join(_shape(a.shape) + ("*" if (name, i) in weights.legacy else "")
                       for i, a in enumerate(arrays)),
             f"{sum(a.size for a in arrays):,}") for name, arrays in weights.items()]
    header = ("layer", "type", "blob shapes", "parameters")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(row, widths))))
    print(f"{len(weights)} layers with parameters, {weights.param_count:,} parameters")
    if weights.legacy:
        print("* stored with legacy 4-d num/channels/height/width dims")


def _convert(args) -> None:
    check_writable(args.output)
    weights = load_weights(args.input)
    net = read_net(args.net) if args.net else None
    if net is not None:  # what save_weights would refuse, named by file, before any write
        check_layers_in(weights, downgrade_net(net) if args.legacy else net, args.net)
    fmt = _format_for(args.output, args.format)
    save_weights(args.output, weights, net=net, format=fmt, legacy=args.legacy)
    what = "legacy V1 binary" if args.legacy else ("HDF5" if fmt == "hdf5" else "binary")
    print(f"wrote {args.output} ({what}, {len(weights)} layers, {weights.param_count:,} "
          "parameters)")


def _default_target(family: str | None) -> tuple[caffe_pb2.NetParameter, str]:
    """The reference FCN for a classifier family: models/<name>/deploy.prototxt or its builder."""
    if family not in (None, *DEFAULT_TARGETS):
        raise FcnkitError(f"no default FCN for a {FAMILY_NAMES[family]} source; give --net")
    folder, builder = DEFAULT_TARGETS[family or "vgg16"]
    path = REPO / "models" / folder / "deploy.prototxt"
    if path.is_file():
        return read_net(path), str(path)
    try:
        from netgen import fcn
    except ImportError:
        raise FcnkitError(f"default target {path} is missing; give --net") from None
    return getattr(fcn, builder)("deploy"), f"netgen.fcn.{builder}('deploy')"


def _default_out(source: str, target: str) -> Path:
    src = Path(source)
    stem = src.name.split(".")[0]
    tag = Path(target).parent.name if target.endswith(".prototxt") else target.split("(")[0]
    tag = tag.replace("netgen.fcn.", "").replace("fcn_", "fcn-")
    return src.with_name(f"{stem}-{tag}.caffemodel")


def _channels(text: str) -> int | dict[str, int]:
    """--input-channels: N for every data layer's image top, or TOP=N,... per top."""
    pairs = [part.partition("=") for part in text.split(",")]
    try:
        if len(pairs) == 1 and not pairs[0][1]:
            values = {"": int(text)}
        else:
            values = {top.strip(): int(n) for top, eq, n in pairs if eq and top.strip()}
            if len(values) != len(pairs):
                raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or TOP=N,TOP=N (e.g. color=3,hha=3), "
                                         f"not {text!r}") from None
    if min(values.values()) < 1:
        raise argparse.ArgumentTypeError(f"channels must be positive, not {text!r}")
    return values[""] if "" in values else values


def _seed(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, not {text!r}")
    return int(text)


def _std(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {text!r}")
    return value


def _transplant(args) -> None:
    if args.out:
        check_writable(args.out)
    source = load_weights(args.source)
    family = detect(source)
    print(f"source: {args.source} ({_describe(source)}; {_looks_like(source)}, "
          f"{source.param_count:,} parameters)")
    if args.net:
        net, target = read_net(args.net), args.net
    else:
        net, target = _default_target(family)
    print(f"target: {target}")
    out = Path(args.out) if args.out else _default_out(args.source, target)
    check_writable(out)
    weights, report = transplant(net, source, args.suffix, args.seed,
                                 input_channels=args.input_channels,
                                 input_size=args.input_size)
    if not report.by_action("copied") and not report.by_action("coerced"):
        raise FcnkitError(f"no layer of {args.source} matches a layer of {target} by name"
                          + (f" with suffix {args.suffix!r}" if args.suffix else ""))
    print(report)
    if not args.no_interp:
        upsamplers = interp(weights, net)
        if upsamplers:
            print(f"bilinear upsampling set in: {', '.join(upsamplers)}")
    save_weights(out, weights, format=_format_for(str(out), args.format))
    print(f"wrote {out}")


def _interp(args) -> None:
    if not args.layer and not args.net:
        raise FcnkitError("give the layers to set (--layer NAME ...) or a net (--net)")
    check_writable(args.out)
    weights = load_weights(args.model)
    done = interp(weights, read_net(args.net) if args.net else args.layer)
    if not done:
        raise FcnkitError(f"{args.net}: no Deconvolution layer to set")
    save_weights(args.out, weights, format=_format_for(args.out, args.format))
    print(f"bilinear upsampling set in {', '.join(done)}; wrote {args.out}")


def _expand_score(args) -> None:
    check_writable(args.out)
    weights = load_weights(args.model)
    filler = Filler(type="gaussian", std=args.std) if args.std else None
    for layer in args.layer:
        before = weights[layer][0].shape if layer in weights else None
        weights = expand_score(weights, layer, args.classes, filler=filler, seed=args.seed)
        print(f"{layer}: {_shape(before)} -> {_shape(weights[layer][0].shape)}")
    save_weights(args.out, weights, format=_format_for(args.out, args.format))
    print(f"wrote {args.out}")


def _stage_init(args) -> None:
    check_writable(args.out)
    source = load_weights(args.source)
    weights, report = stage_init(source, read_net(args.net), seed=args.seed,
                                 input_channels=args.input_channels,
                                 input_size=args.input_size)
    print(report)
    save_weights(args.out, weights, format=_format_for(args.out, args.format))
    print(f"wrote {args.out}")


def _export(args) -> None:
    from .export_onnx import OPSET, export_file, preprocessing_from_args

    check_writable(args.output)
    preprocessing = preprocessing_from_args(args.mean, args.channel_order, args.input_scale)
    if args.output.endswith(".py"):
        from . import export_torch

        if args.size or args.argmax or args.fp16:
            raise FcnkitError("--size, --argmax and --fp16 apply to ONNX exports (OUT.onnx)")
        source, state = export_torch.export_file(args.deploy, args.weights, args.output,
                                                 preprocessing)
        print(f"wrote {source} (torch.nn.Module, any input size) and {state} (state_dict); "
              f"use: import {source.stem}; net = {source.stem}.load()")
        return
    result = export_file(args.deploy, args.weights, args.output, size=args.size,
                         argmax=args.argmax, fp16=args.fp16, preprocessing=preprocessing)
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    dims = "N x C x H x W, N H W dynamic" if args.size is None else \
        f"fixed {args.size[0]}x{args.size[1]}"
    print(f"wrote {args.output} (ONNX opset {OPSET}, {dims}; inputs {', '.join(result.inputs)}; "
          f"outputs {', '.join(result.outputs)}; {Path(args.output).stat().st_size / 1e6:.1f} MB)")


EXPORT_EXAMPLES = """\
The TEST-phase net as ONNX with Caffe's exact semantics at every input size (Crop offsets,
ceil-mode pooling with Caffe's pad clip and AVE divisor, grouped Deconvolution, LRN, ...).
Opset 17. N, H, W are dynamic unless --size fixes them (OpenCV 4.x's ONNX importer needs
fixed sizes; onnxruntime and TensorRT take the dynamic file). Preprocessing is recorded as
model metadata (fcnkit.preprocessing: channel order, mean, scale per input).
An OUT ending in .py writes a plain PyTorch module instead: OUT.py (torch code, any input
size, no fcnkit needed) and OUT.pt (its state_dict).

examples:
  python -m surgery export models/voc-fcn8s/deploy.prototxt fcn8s.caffemodel fcn8s.onnx
  python -m surgery export models/voc-fcn8s/deploy.prototxt fcn8s.caffemodel fcn8s-500.onnx \\
      --size 500x500 --argmax
  python -m surgery export models/nyud-fcn32s-color-hha/deploy.prototxt w.caffemodel nyud.onnx \\
      --mean color=116.190,97.203,92.318 --mean hha=132.431,94.076,118.477 \\
      --channel-order hha=as-is
  python -m surgery export models/voc-fcn8s/deploy.prototxt fcn8s.caffemodel fcn8s.py"""


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("binary", "hdf5"),
                   help="output format (default: hdf5 for .h5 names, else binary)")


def _add_model_io(p: argparse.ArgumentParser) -> None:
    """MODEL in, --out FILE (required) and --format: commands that rewrite one caffemodel."""
    p.add_argument("model", metavar="MODEL", help="caffemodel or .caffemodel.h5 to read")
    p.add_argument("--out", required=True, metavar="FILE", help="caffemodel to write")
    _add_format(p)


def _add_seed(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=_seed, default=0, metavar="N",
                   help=f"seed of the random fillers for {what} (default 0)")


def _add_channels(p: argparse.ArgumentParser) -> None:
    """Sizes of data-layer tops the prototxt leaves open (Python, Data...)."""
    p.add_argument("--input-channels", type=_channels, default=3, metavar="N|TOP=N,...",
                   help="channels of data-layer tops whose shape the prototxt omits: N for the "
                        "first top of each data layer (default 3; later tops count as 1-channel "
                        "labels), or per top, e.g. color=3,hha=3")
    p.add_argument("--input-size", type=size_arg, metavar="HxW",
                   help="their height x width, needed only when a parameter shape depends on "
                        "it (an InnerProduct over the image)")


def _transplant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="classifier caffemodel (binary current or legacy V1, or HDF5)")
    p.add_argument("--net", metavar="PROTOTXT",
                   help="target net (default: models/voc-fcn32s/deploy.prototxt, or "
                        "models/voc-fcn-alexnet/deploy.prototxt for a CaffeNet/AlexNet source)")
    p.add_argument("--out", metavar="FILE",
                   help="output caffemodel (default: <source>-<target>.caffemodel beside the "
                        "source)")
    p.add_argument("--suffix", default="", metavar="S",
                   help="copy source layer NAME into target layer NAME+S (e.g. color for NYUD)")
    _add_seed(p, "target layers the source does not fill")
    _add_channels(p)
    p.add_argument("--no-interp", action="store_true",
                   help="leave Deconvolution layers at their filler instead of bilinear")
    _add_format(p)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m surgery", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="layers, blob shapes and parameter counts of a caffemodel",
                       description="List the layers, blob shapes and parameter counts of a "
                                   "caffemodel or .caffemodel.h5, and name the classifier it "
                                   "looks like.")
    p.add_argument("model", metavar="MODEL", help="caffemodel or .caffemodel.h5")
    p.set_defaults(run=_info)

    p = sub.add_parser("convert", help="binary <-> HDF5, legacy V1 <-> current format",
                       description="Rewrite weights in another format; arrays stay "
                                   "bit-identical.")
    p.add_argument("input", metavar="INPUT", help="caffemodel or .caffemodel.h5 to read")
    p.add_argument("output", metavar="OUTPUT", help="file to write")
    p.add_argument("--legacy", action="store_true", help="write the legacy V1 binary format")
    p.add_argument("--net", metavar="PROTOTXT",
                   help="layer definitions to write along; must have every weights layer")
    _add_format(p)
    p.set_defaults(run=_convert)

    p = sub.add_parser("transplant", help="classifier weights -> fully convolutional net",
                       description="Copy classifier weights into an FCN by layer name, "
                                   "reshaping fc layers into convolutions, and report every "
                                   "parameter.")
    _transplant_options(p)
    p.set_defaults(run=_transplant)

    p = sub.add_parser("interp", help="set Deconvolution layers to bilinear upsampling",
                       description="Set Deconvolution weights to bilinear upsampling kernels "
                                   "(group from --net; layers named by --layer: group 1).")
    _add_model_io(p)
    p.add_argument("--layer", action="append", default=[], metavar="NAME",
                   help="Deconvolution layer to set (repeatable)")
    p.add_argument("--net", metavar="PROTOTXT",
                   help="set every Deconvolution layer of this net")
    p.set_defaults(run=_interp)

    p = sub.add_parser("expand-score", help="change the number of classes of score layers",
                       description="Give score layers a new class count: the first classes "
                                   "keep their weights, new ones start at zero (or --std).")
    _add_model_io(p)
    p.add_argument("--layer", action="append", required=True, metavar="NAME",
                   help="score layer to change (repeatable)")
    p.add_argument("--classes", type=int, required=True, metavar="N",
                   help="new number of classes")
    p.add_argument("--std", type=_std, default=0.0, metavar="S",
                   help="gaussian std for the new classes' weights (default: zeros)")
    _add_seed(p, "new classes (with --std)")
    p.set_defaults(run=_expand_score)

    p = sub.add_parser("stage-init", help="FCN-32s -> 16s -> 8s initialisation",
                       description="Initialise the next FCN stage from the previous one: "
                                   "shared layers copied, new skip score layers zero, "
                                   "upsampling bilinear.")
    p.add_argument("source", metavar="SOURCE", help="trained weights of the previous stage")
    p.add_argument("--net", required=True, metavar="PROTOTXT", help="the next stage's net")
    p.add_argument("--out", required=True, metavar="FILE", help="caffemodel to write")
    _add_seed(p, "layers neither copied nor zeroed")
    _add_channels(p)
    _add_format(p)
    p.set_defaults(run=_stage_init)

    p = sub.add_parser("export", help="deploy net + weights -> ONNX (dynamic size) or PyTorch",
                       description=EXPORT_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("deploy", metavar="DEPLOY", help="deploy.prototxt (Input layers)")
    p.add_argument("weights", metavar="WEIGHTS", help=".caffemodel or .caffemodel.h5")
    p.add_argument("output", metavar="OUT",
                   help=".onnx file to write (or .py: a PyTorch module, with its .pt)")
    p.add_argument("--size", type=size_arg, metavar="HxW",
                   help="fix the input height x width (and N to the prototxt's) instead of "
                        "dynamic N, H, W")
    p.add_argument("--argmax", action="store_true",
                   help="also output the label map (int64 N x H x W) of each 4-D score output")
    p.add_argument("--fp16", action="store_true",
                   help="store weights as float16 (half the file); compute stays float32")
    p.add_argument("--mean", action="append", default=[], metavar="[TOP=]V,V,V",
                   help="per-channel mean recorded for an input (default: the VOC BGR mean for "
                        "3-channel inputs)")
    p.add_argument("--channel-order", action="append", default=[], metavar="[TOP=]ORDER",
                   help="channel order recorded for an input: BGR (default for 3 channels), "
                        "RGB or as-is")
    p.add_argument("--input-scale", action="append", default=[], metavar="[TOP=]X",
                   help="scale recorded for an input, applied after the mean (default 1)")
    p.set_defaults(run=_export)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0


@cli_entry
def transplant_script(argv: list[str] | None = None) -> int:
    """Entry of `python surgery/transplant.py SOURCE [options]`."""
    parser = ArgumentParser(prog="python surgery/transplant.py",
                            description="Make an FCN-ready caffemodel from an ImageNet "
                                        "classifier's (VGG16 or CaffeNet/AlexNet, detected).")
    _transplant_options(parser)
    _transplant(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
