"""`python -m surgery`: inspect, convert and operate on caffemodels from the shell.

Subcommands: info, convert, transplant, interp, expand-score, stage-init. Every output is
written atomically after all checks passed; a user error prints one line and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from netgen.errors import FcnkitError, cli_entry
from netgen.proto import caffe_pb2
from netgen.schema import read_net

from .caffemodel import Weights, load_weights, save_weights
from .classifiers import detect
from .fillers import Filler
from .interp import interp
from .score_expand import expand_score
from .stage import stage_init
from .transplant import transplant

REPO = Path(__file__).resolve().parents[1]
# Classifier family -> (reference model folder under models/, netgen.fcn builder).
DEFAULT_TARGETS = {"vgg16": ("voc-fcn32s", "fcn_vgg16"), "caffenet": ("voc-fcn-alexnet",
                                                                       "fcn_alexnet")}
FAMILY_NAMES = {"vgg16": "VGG16", "vgg19": "VGG19", "caffenet": "CaffeNet/AlexNet"}


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


def _info(args) -> None:
    weights = load_weights(args.model)
    size = Path(args.model).stat().st_size
    print(f"{args.model}: {_describe(weights)}, {size / 1e6:.1f} MB")
    family = detect(weights)
    if family:
        kind = "classifier" if weights["fc6"][0].ndim == 2 else "trunk, fully convolutional"
        print(f"looks like: {FAMILY_NAMES[family]} {kind}")
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
    weights = load_weights(args.input)
    net = read_net(args.net) if args.net else None
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


def _input_channels(args) -> int:
    if args.input_channels < 1:
        raise FcnkitError(f"--input-channels must be positive, not {args.input_channels}")
    return args.input_channels


def _transplant(args) -> None:
    source = load_weights(args.source)
    family = detect(source)
    print(f"source: {args.source} ({_describe(source)}; "
          f"{FAMILY_NAMES.get(family, 'unrecognised')} classifier, "
          f"{source.param_count:,} parameters)")
    if args.net:
        net, target = read_net(args.net), args.net
    else:
        net, target = _default_target(family)
    print(f"target: {target}")
    weights, report = transplant(net, source, args.suffix, args.seed,
                                 input_channels=_input_channels(args))
    if not report.by_action("copied") and not report.by_action("coerced"):
        raise FcnkitError(f"no layer of {args.source} matches a layer of {target} by name"
                          + (f" with suffix {args.suffix!r}" if args.suffix else ""))
    print(report)
    if not args.no_interp:
        upsamplers = interp(weights, net)
        if upsamplers:
            print(f"bilinear upsampling set in: {', '.join(upsamplers)}")
    out = Path(args.out) if args.out else _default_out(args.source, target)
    save_weights(out, weights, format=_format_for(str(out), args.format))
    print(f"wrote {out}")


def _interp(args) -> None:
    if not args.layer and not args.net:
        raise FcnkitError("give the layers to set (--layer NAME ...) or a net (--net)")
    weights = load_weights(args.model)
    done = interp(weights, read_net(args.net) if args.net else args.layer)
    save_weights(args.out, weights, format=_format_for(args.out, args.format))
    print(f"bilinear upsampling set in {', '.join(done) or 'no layer'}; wrote {args.out}")


def _expand_score(args) -> None:
    weights = load_weights(args.model)
    filler = Filler(type="gaussian", std=args.std) if args.std else None
    for layer in args.layer:
        before = weights[layer][0].shape if layer in weights else None
        weights = expand_score(weights, layer, args.classes, filler=filler, seed=args.seed)
        print(f"{layer}: {_shape(before)} -> {_shape(weights[layer][0].shape)}")
    save_weights(args.out, weights, format=_format_for(args.out, args.format))
    print(f"wrote {args.out}")


def _stage_init(args) -> None:
    source = load_weights(args.source)
    weights, report = stage_init(source, read_net(args.net), seed=args.seed,
                                 input_channels=_input_channels(args))
    print(report)
    save_weights(args.out, weights, format=_format_for(args.out, args.format))
    print(f"wrote {args.out}")


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("binary", "hdf5"),
                   help="output format (default: hdf5 for .h5 names, else binary)")


def _transplant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="classifier caffemodel (binary, V1 or HDF5)")
    p.add_argument("--net", help="target deploy prototxt (default: the VOC FCN-32s, or "
                                 "FCN-AlexNet for a CaffeNet/AlexNet source)")
    p.add_argument("--out", help="output caffemodel (default: <source>-<target>.caffemodel)")
    p.add_argument("--suffix", default="", help="target name = source name + suffix")
    p.add_argument("--seed", type=int, default=0, help="seed of the fillers for new layers")
    p.add_argument("--input-channels", type=int, default=3,
                   help="channels of data layers whose shape the prototxt omits (default 3)")
    p.add_argument("--no-interp", action="store_true",
                   help="leave Deconvolution layers at their filler instead of bilinear")
    _add_format(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m surgery", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="layers, blob shapes and parameter counts of a caffemodel")
    p.add_argument("model")
    p.set_defaults(run=_info)

    p = sub.add_parser("convert", help="binary <-> HDF5, legacy V1 <-> current format")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--legacy", action="store_true", help="write the legacy V1 binary format")
    p.add_argument("--net", help="layer definitions to write along (prototxt)")
    _add_format(p)
    p.set_defaults(run=_convert)

    p = sub.add_parser("transplant", help="classifier weights -> fully convolutional net")
    _transplant_options(p)
    p.set_defaults(run=_transplant)

    p = sub.add_parser("interp", help="set Deconvolution layers to bilinear upsampling")
    p.add_argument("model")
    p.add_argument("--layer", action="append", default=[], help="layer to set (repeatable)")
    p.add_argument("--net", help="set every Deconvolution layer of this prototxt")
    p.add_argument("--out", required=True)
    _add_format(p)
    p.set_defaults(run=_interp)

    p = sub.add_parser("expand-score", help="change the number of classes of score layers")
    p.add_argument("model")
    p.add_argument("--layer", action="append", required=True, help="layer (repeatable)")
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--std", type=float, default=0.0,
                   help="gaussian std for the new classes' weights (default: zeros)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _add_format(p)
    p.set_defaults(run=_expand_score)

    p = sub.add_parser("stage-init", help="FCN-32s -> 16s -> 8s initialisation")
    p.add_argument("source", help="trained weights of the previous stage")
    p.add_argument("--net", required=True, help="the next stage's prototxt")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-channels", type=int, default=3)
    _add_format(p)
    p.set_defaults(run=_stage_init)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0


@cli_entry
def transplant_script(argv: list[str] | None = None) -> int:
    """Entry of `python surgery/transplant.py SOURCE [options]`."""
    parser = argparse.ArgumentParser(prog="surgery/transplant.py",
                                     description="classifier weights -> fully convolutional net")
    _transplant_options(parser)
    _transplant(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
