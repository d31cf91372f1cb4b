"""infer.py --backend onnxruntime: the net as ONNX, run by onnxruntime on the CPU.

The weights argument is either an exported .onnx file (python -m surgery export; dynamic
sizes, or one fixed size that every image must have) or a caffemodel, which is exported in
memory with the deploy net first (surgery.export_onnx), so both run the same graph.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from netgen.errors import FcnkitError


def _last_line(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


def load_runner(deploy: str | os.PathLike, weights: str | os.PathLike, input: str, output: str,
                gpu: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """run(chw) -> C x H x W scores of `output` for one preprocessed image (C x H x W float32,
    or {input top: C x H x W} for a net with several inputs).

    Raises FcnkitError naming the file: unreadable model, missing input/output blob, an image
    size a fixed-size export does not take.
    """
    import onnxruntime as ort

    if gpu is not None:
        raise FcnkitError("--gpu: the onnxruntime backend runs on the CPU only")
    weights = Path(weights)
    if weights.suffix == ".onnx":
        model, what = weights.read_bytes(), str(weights)
    else:
        from surgery.export_onnx import export

        model, what = export(deploy, weights).data, f"{weights} (as ONNX)"
    try:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as e:   # onnxruntime raises its own pybind error classes
        raise FcnkitError(f"onnxruntime cannot load {what}: {_last_line(e)}") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if input not in inputs:
        raise FcnkitError(f"{what}: no input {input!r} (inputs: {', '.join(inputs)})")
    if output not in outputs:
        raise FcnkitError(f"{what}: no output {output!r} (outputs: {', '.join(outputs)})")
    fixed = session.get_inputs()[inputs.index(input)].shape

    def run(x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        arrays = x if isinstance(x, dict) else {input: x}
        feeds = {top: v[np.newaxis] for top, v in arrays.items()}
        try:
            return session.run([output], feeds)[0][0]
        except Exception as e:
            h, w = feeds[input].shape[2:]
            size = "x".join(map(str, fixed[2:]))
            hint = (f" (exported for {size} inputs only; export without --size)"
                    if all(isinstance(d, int) for d in fixed[2:]) else "")
            raise FcnkitError(f"onnxruntime failed on {what} with a {h}x{w} image{hint}: "
                              f"{_last_line(e)}") from None
    return run
