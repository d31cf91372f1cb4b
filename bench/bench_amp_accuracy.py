"""What mixed precision costs in accuracy: a trained net's scores under amp against float32.

    python solve.py --demo-dir /tmp/demo                # train the demo's FCN-8s (float32)
    python bench/bench_amp_accuracy.py /tmp/demo        # bf16 inference against float32

On every val image of a demo folder (or --images of another model), the deploy net's `score`
blob in float32 and under `--amp` (infer.py's engine path: channels-last, half weights cast
once): argmax agreement over all pixels, the largest relative error max|amp - fp32| / max|fp32|
over images, and mean IU of both label maps against the ground truth. Run by hand.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from netgen.errors import FcnkitError, cli_entry  # noqa: E402
from netgen.presets import VOC_MEAN  # noqa: E402
from solvers.data.readers import read_index_png, read_rgb, to_caffe_input  # noqa: E402
from solvers.predict import Predictor  # noqa: E402
from solvers.score import fast_hist, metrics  # noqa: E402


def demo_files(folder: Path) -> tuple[Path, Path, list[tuple[Path, Path]]]:
    """(deploy, final FCN-8s weights, [(image, label)] of the val split) of a demo folder."""
    model = folder / "models" / "synthetic-fcn8s"
    weights = sorted((model / "snapshot").glob("train_iter_*.caffemodel"),
                     key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not weights:
        raise FcnkitError(f"{folder}: no trained FCN-8s snapshot (run python solve.py "
                          f"--demo-dir {folder} first)")
    data = folder / "data"
    names = (data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    return (model / "deploy.prototxt", weights[-1],
            [(data / "JPEGImages" / f"{n}.jpg", data / "SegmentationClass" / f"{n}.png")
             for n in names])


def compare(deploy: Path, weights: Path, items: list[tuple[Path, Path]], amp: str,
            threads: int | None) -> dict:
    from solvers.cliargs import use_threads

    use_threads(threads)
    ref, fast = Predictor(deploy, weights), Predictor(deploy, weights, amp=amp)
    agree = total = 0
    worst = 0.0
    hists: dict[str, np.ndarray] = {}
    for image, label in tqdm(items, desc=f"fp32 vs {amp}", unit="img"):
        x = to_caffe_input(read_rgb(image), VOC_MEAN)
        a, b = ref.scores(x), fast.scores(x)
        worst = max(worst, float(np.abs(b - a).max() / max(np.abs(a).max(), 1e-30)))
        pa, pb = a.argmax(0), b.argmax(0)
        agree += int((pa == pb).sum())
        total += pa.size
        truth = read_index_png(label)
        n = a.shape[0]
        for key, pred in (("fp32", pa), (amp, pb)):
            hists[key] = hists.get(key, 0) + fast_hist(truth, pred.astype(truth.dtype), n)
    return dict(images=len(items), pixels=total, agreement=agree / total, max_rel_error=worst,
                mean_iu={k: metrics(h)["mean_iu"] for k, h in hists.items()})


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("demo", type=Path, help="a demo folder (python solve.py --demo-dir DIR)")
    ap.add_argument("--amp", default="bf16", choices=("bf16", "fp16"))
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    a = ap.parse_args(argv)
    deploy, weights, items = demo_files(a.demo)
    r = compare(deploy, weights, items, a.amp, a.threads)
    print(f"\n{weights} on {r['images']} val images ({r['pixels']} pixels):")
    print(f"| | fp32 | {a.amp} |\n|---|---|---|")
    print(f"| mean IU | {100 * r['mean_iu']['fp32']:.2f} | {100 * r['mean_iu'][a.amp]:.2f} |")
    print(f"\nargmax agreement {100 * r['agreement']:.3f} %, max relative error of `score` "
          f"{r['max_rel_error']:.2e}")


if __name__ == "__main__":
    main()
