"""Initial weights of a training run, as the reference solve.py scripts set them up.

Weights are copied into the train net by layer name (a blob count or shape mismatch is an
error here, where Caffe would abort); an ImageNet classifier (fully connected fc6/fc7) is
first made fully convolutional by surgery's transplant. Upsampling Deconvolution layers the
weights did not provide get bilinear kernels, written into the backend's net in place.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2
from surgery.caffemodel import Weights, legacy_fits, load_weights

from .solver_files import SolverFiles, deconvolutions


def _is_classifier(source: Weights, net: caffe_pb2.NetParameter) -> bool:
    """True when the file's fully connected layers are convolutions in `net` (fc6/fc7)."""
    convs = {layer.name for layer in net.layer if layer.type == "Convolution"}
    return any(source.types.get(name) == "InnerProduct" and name in convs for name in source)


def _check_fits(net: Any, source: Weights, where: Path) -> None:
    """Caffe aborts the process on a blob count or shape mismatch; report it as an error."""
    blobless = sorted(source.blobless & set(net.params))
    if blobless:
        raise FcnkitError(f"{where}: layer {blobless[0]!r} has 0 blobs, the net expects "
                          f"{len(net.params[blobless[0]])}")
    for name, arrays in source.items():
        if name not in net.params:
            continue
        target = net.params[name]
        if len(arrays) != len(target):
            raise FcnkitError(f"{where}: layer {name!r} has {len(arrays)} blobs, the net "
                              f"expects {len(target)}")
        for i, (array, blob) in enumerate(zip(arrays, target)):
            want = tuple(blob.data.shape)
            legacy = (name, i) in source.legacy and legacy_fits(tuple(array.shape), want)
            if tuple(array.shape) != want and not legacy:
                raise FcnkitError(
                    f"{where}: cannot copy layer {name!r} param {i}: shape "
                    f"{'x'.join(map(str, array.shape))} in the file, "
                    f"{'x'.join(map(str, want))} in the net (rename the layer to learn it "
                    "from scratch)")


def _data_channels(net: Any, definition: caffe_pb2.NetParameter) -> dict[str, int]:
    """Channels of the tops of layers without bottoms (data layers), read off the built net."""
    return {top: int(net.blobs[top].data.shape[1]) for layer in definition.layer
            if not layer.bottom for top in layer.top
            if top in net.blobs and net.blobs[top].data.ndim >= 2}


def fcn_weights(weights: Path, files: SolverFiles, net: Any) -> tuple[Path, Weights]:
    """The file to copy into the train net: `weights` itself, or, for an ImageNet classifier,
    the layers surgery's transplant takes from it (fc made convolutional), written beside the
    snapshots. Layers the classifier lacks keep the net's own initialisation."""
    source = load_weights(weights)
    if not _is_classifier(source, files.train_net):
        return weights, source
    from surgery.caffemodel import save_weights
    from surgery.transplant import transplant

    try:
        converted, report = transplant(files.train_net, source,
                                       input_channels=_data_channels(net, files.train_net) or 3)
    except FcnkitError as e:  # say which file does not fit (a classifier of another width)
        raise FcnkitError(f"--weights {weights}: {e}") from None
    taken = {e.layer for e in report if e.action in ("copied", "coerced")}
    kept = Weights(((name, arrays) for name, arrays in converted.items() if name in taken),
                   types=converted.types)
    out = files.snapshot_prefix.parent / f"{weights.name.split('.')[0]}-fcn.caffemodel"
    # only the layers taken: Caffe's CopyTrainedLayersFrom aborts on a layer written with
    # fewer blobs than the net's (e.g. an input Scale the classifier does not have)
    definition = caffe_pb2.NetParameter()
    definition.CopyFrom(files.train_net)
    del definition.layer[:]
    definition.layer.extend(layer for layer in files.train_net.layer if layer.name in taken)
    save_weights(out, kept, net=definition)
    tqdm.write(f"transplanted {weights.name} -> {out}: {report.summary()}")
    return out, kept


def set_bilinear(net: Any, module: ModuleType, definition: caffe_pb2.NetParameter,
                 names: list[str]) -> None:
    """Give the named Deconvolution layers bilinear upsampling kernels, in place."""
    from surgery.interp import bilinear_weights

    groups = {layer.name: layer.convolution_param.group for layer in definition.layer}
    for name in names:
        blob = net.params[name][0]
        module.set_data(blob, bilinear_weights(tuple(blob.data.shape), groups[name], name))


def init_weights(net: Any, module: ModuleType, weights: Path | None,
                 files: SolverFiles) -> list[str]:
    """Copy `weights` into the train net, then give bilinear kernels to the upsampling layers
    the weights did not provide. Returns the layers set bilinear."""
    loaded: set[str] = set()
    if weights is not None:
        path, source = fcn_weights(weights, files, net)
        _check_fits(net, source, path)
        net.copy_from(str(path))
        loaded = set(source) & set(net.params)
    fresh = [name for name in deconvolutions(files.train_net)
             if name in net.params and name not in loaded]
    set_bilinear(net, module, files.train_net, fresh)
    return fresh
