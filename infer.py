#!/usr/bin/env python3
"""Segment images with a trained FCN: label PNGs (VOC palette) and colour overlays with a legend.

    python infer.py models/voc-fcn8s/deploy.prototxt fcn8s-heavy-pascal.caffemodel img.jpg -o out
    python infer.py models/voc-fcn8s weights.caffemodel photos/ --backend opencv
    python infer.py models/nyud-fcn32s-color-hha w.caffemodel --input color=rgb/ --input hha=hha/

Each input is preprocessed as the model folder's train/val data layer does it (colour: RGB ->
BGR minus the dataset mean; NYUD HHA: unflipped minus the HHA mean; depth: log depth).

For each image X: out/X.png holds the class indices (palette PNG, opens as a picture) and
out/X_overlay.png the classes blended over the image with a legend of the classes present.
Backends: torch (fcnkit's engine), caffe (pycaffe), opencv (cv2.dnn.readNetFromCaffe),
onnxruntime (WEIGHTS an .onnx from `python -m surgery export`, or a caffemodel exported on the fly).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from netgen.errors import FcnkitError, cli_entry
from netgen.presets import VOC_MEAN
from solvers.cliargs import Parser, non_negative, positive, use_threads

TILE = 2048  # infer.py --tile default: larger images go window by window (solvers.tiles)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def build_parser() -> Parser:
    from solvers.data.classes import CLASS_NAMES
    from solvers.predict import BACKENDS

    ap = Parser(prog="infer.py", description="Segment images with a deploy net and its weights.")
    ap.add_argument("deploy", help="deploy.prototxt, or a model folder holding one")
    ap.add_argument("weights", help="trained .caffemodel / .caffemodel.h5")
    ap.add_argument("images", nargs="*", help="image files or folders of images (a net with "
                    "one input)")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                    help="images for the net input NAME (file or folder; repeat per input, "
                    "paired by file name), e.g. --input color=DIR --input hha=DIR")
    ap.add_argument("-o", "--out", default="predictions", help="output folder (predictions)")
    ap.add_argument("--backend", default="torch", help=f"{' | '.join(BACKENDS)} (torch)")
    ap.add_argument("--gpu", type=non_negative, help="GPU index (torch, caffe; default CPU)")
    ap.add_argument("--mean", help="B,G,R mean subtracted from a colour image (default: as "
                    "the model folder's data layer preprocesses each input, else the VOC mean "
                    f"{','.join(map(str, VOC_MEAN))})")
    ap.add_argument("--classes", help=f"class names for the legend: {', '.join(CLASS_NAMES)}, "
                    "or a text file with one name per line (default: the dataset netgen generated the "
                    "model for, else voc for 21 classes)")
    ap.add_argument("--output", default="score", help="blob to take the argmax of (score)")
    ap.add_argument("--alpha", type=float, default=0.5, help="overlay opacity 0..1 (0.5)")
    ap.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision on the torch "
                    "backend: faster on CPUs with AVX-512 bf16 or AMX and on GPUs; labels "
                    "differ from float32 on ~0.1%% of pixels (README, Speed)")
    ap.add_argument("--threads", type=positive, help="torch/OpenCV CPU threads (default: what "
                    "torch picks, one per core)")
    ap.add_argument("--tile", type=non_negative, default=TILE, help="images with a side over "
                    "this many pixels go through the net in overlapping windows of at most "
                    "TILE x TILE, stitched to the same labels, so memory stays bounded; 0: "
                    f"never (default {TILE})")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def parse_mean(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise FcnkitError(f"--mean {text!r}: give three numbers B,G,R")
    return values  # type: ignore[return-value]


def find_images(items: list[str]) -> list[Path]:
    """Image files named or inside the named folders (not recursive), each checked to open."""
    from solvers.data.readers import image_header

    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise FcnkitError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise FcnkitError(f"{path}: no such image file or folder")
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems:
            raise FcnkitError(f"{path} and {stems[path.stem]} would both write {path.stem}.png")
        stems[path.stem] = path
        with image_header(path) as im:  # header and size (MAX_PIXELS) now, pixels when used
            im.verify()
    return found


def class_list(spec: str | None, n: int | None, deploy: Path | None = None) -> list[str] | None:
    """Legend names for n classes: a known list, a file of names, or (no spec) the class list
    of the dataset a netgen-generated `deploy` net was made for, else voc when n == 21.

    With n None only checks that `spec` names a list or a readable file.
    """
    from solvers.data.classes import CLASS_NAMES, class_names, model_class_names

    if spec is None:
        from_model = model_class_names(deploy, n) if deploy is not None and n else None
        if from_model is not None:
            return list(from_model)
        return list(class_names("voc")) if n == 21 else None
    if spec in CLASS_NAMES:
        return list(class_names(spec, n))
    path = Path(spec)
    if not path.is_file():
        raise FcnkitError(f"--classes {spec!r}: not a known list ({', '.join(CLASS_NAMES)}) "
                          "nor a file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if n is not None and len(names) != n:
        raise FcnkitError(f"--classes {spec}: {len(names)} names for a net with {n} classes")
    return names


def input_images(plan, images: list[str], inputs: list[str]) -> list[dict[str, Path]]:
    """{Input top: image} per item, from the positional images (one-input nets) and the
    --input NAME=PATH options, paired by file stem (solvers.preprocess.pair_inputs)."""
    from solvers.preprocess import pair_inputs

    given: dict[str, list[str]] = {}
    for spec in inputs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise FcnkitError(f"--input {spec!r}: give NAME=PATH, e.g. --input hha=images/hha")
        given.setdefault(name, []).append(path)
    if images:
        if len(plan.inputs) > 1 or given:
            raise FcnkitError(f"give the images with --input NAME=PATH, one per net input "
                              f"({plan.describe()}), not as plain arguments")
        given = {next(iter(plan.inputs)): images}
    return pair_inputs(plan, {name: find_images(paths) for name, paths in given.items()})


def segment(predictor, images: list[dict[str, Path]], out: Path, plan, classes: str | None,
            alpha: float, progress: bool = True, tile: int | None = None) -> list[Path]:
    """Write <stem>.png (labels) and <stem>_overlay.png for every image; returns the label files.

    The output folder is created once the first image went through the net and the legend
    names fit its class count, so a mistake there leaves nothing behind.
    """
    from solvers.predict import save_prediction

    names: list[str] | None = None
    written: list[Path] = []
    for item in tqdm(images, desc="infer", unit="img", disable=not progress):
        path = next(iter(item.values()))  # the first input's image names the outputs
        rgb, feeds = plan.load(item)
        label = predictor.labels_of(feeds, rgb.shape[:2], tile)
        if not written:
            names = class_list(classes, predictor.num_classes, predictor.deploy)
            out.mkdir(parents=True, exist_ok=True)
        written.append(save_prediction(out, path.stem, rgb, label, names, alpha)[0])
    return written


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from solvers.predict import BACKENDS, Predictor
    from solvers.preprocess import input_plan

    a = build_parser().parse_args(argv)
    if a.backend not in BACKENDS:
        raise FcnkitError(f"unknown backend {a.backend!r} (choose from {', '.join(BACKENDS)})")
    if not 0.0 <= a.alpha <= 1.0:
        raise FcnkitError(f"--alpha must be in 0..1, got {a.alpha}")
    mean = parse_mean(a.mean) if a.mean is not None else None
    deploy = Path(a.deploy)
    if deploy.is_dir():
        deploy = deploy / "deploy.prototxt"
    plan = input_plan(deploy, mean)
    images = input_images(plan, a.images, a.input)
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise FcnkitError(f"--out {out}: exists and is not a folder")
    if a.classes is not None:
        class_list(a.classes, None)
    use_threads(a.threads)
    predictor = Predictor(deploy, a.weights, a.backend, a.gpu, a.output, amp=a.amp)
    if not a.quiet:
        print(f"inputs: {plan.describe()} (from {plan.source})")
    written = segment(predictor, images, out, plan, a.classes, a.alpha, not a.quiet, a.tile)
    print(f"wrote {len(written)} label maps and overlays to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
