"""Caffe Python data layers over the datasets, usable from a prototxt's python_param:

    python_param { module: "solvers.data.layers" layer: "VOCSegDataLayer"
                   param_str: "{'voc_dir': 'data/VOC2011', 'split': 'train', 'seed': 1337}" }

The classes follow pycaffe's interface (setup/reshape/forward/backward, `self.param_str`,
`top[i].reshape(*shape)`, `top[i].data[...] = ...`; never iterating `top`, which pycaffe's
blob vectors refuse). They derive from caffe.Layer when pycaffe imports, otherwise from the
engine's stand-in (solvers.engine.pylayer.Layer), so the same classes run inside real Caffe and
inside fcnkit's PyTorch engine, which hands in pycaffe's own interface (solvers.engine.pylayer).
The reference module names (voc_layers.VOCSegDataLayer, ...) resolve to the same classes.
"""
from __future__ import annotations

import itertools
import sys
from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np

from netgen.errors import FcnkitError

from ..caffe_backend import pycaffe
from .ade20k import ADE20KSegDataset
from .base import SegDataset
from .driving import CityscapesSegDataset, KITTIRoadSegDataset, SYNTHIASegDataset
from .pascal import PASCALContextSegDataset, SBDDSegDataset, VOCSegDataset
from .scenes import NYUDSegDataset, SIFTFlowSegDataset
from .synthetic import SyntheticSegDataset

_caffe = pycaffe()  # None when missing or broken (a broken pycaffe must not stop the engine)
if _caffe is not None:  # real Caffe present: be a genuine Python layer
    _LayerBase: type = _caffe.Layer
else:  # fcnkit's engine: its stand-in for caffe.Layer (imports torch, which the engine needs)
    from solvers.engine.pylayer import Layer as _LayerBase


def _process_group() -> tuple[int, int]:
    """(rank, world size) of a torch.distributed run already set up (torchrun + solve.py);
    (0, 1) otherwise, without importing torch for real Caffe."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(order: Iterator[int], rank: int, world: int) -> Iterator[int]:
    """Every world-th item of the shared order, starting at rank: W processes with batch 1 see
    what one process with iter_size W sees, in the same order."""
    return itertools.islice(order, rank, None, world)


class SegDataLayer(_LayerBase):
    """A data layer: no bottoms, one top per dataset top; loads in reshape, emits in forward.

    Each forward emits batch_size items in the reference order (see base.IndexOrder); the
    batch is read once per forward even though Caffe calls reshape more than once. In a
    data-parallel run each process takes its own share of that order (see `shard`).
    """

    DATASET: type[SegDataset] = SegDataset

    def setup(self, bottom, top) -> None:
        name = type(self).__name__
        self.dataset = self.DATASET.from_param_str(self.param_str, layer=name)
        if len(bottom) != 0:
            raise FcnkitError(f"{name}: a data layer takes no bottom, got {len(bottom)}")
        tops = self.dataset.tops
        if len(top) != len(tops):
            raise FcnkitError(f"{name}: needs {len(tops)} tops ({', '.join(tops)}), "
                              f"got {len(top)}")
        self.label_survey = self.dataset.survey_labels()  # bad label files fail here
        self._order = shard(self.dataset.order(), *_process_group())
        self._batch: dict[str, np.ndarray] | None = None

    def reshape(self, bottom, top) -> None:
        if self._batch is None:
            idx = [next(self._order) for _ in range(self.dataset.batch_size)]
            self._batch = self.dataset.batch(idx)
        for i, name in enumerate(self.dataset.tops):  # pycaffe's top vector: top[i], no iteration
            top[i].reshape(*self._batch[name].shape)

    def forward(self, bottom, top) -> None:
        if self._batch is None:  # forward without reshape: load now
            self.reshape(bottom, top)
        for i, name in enumerate(self.dataset.tops):
            top[i].data[...] = self._batch[name]
        self._batch = None

    def backward(self, top, propagate_down, bottom) -> None:
        """Data layers propagate nothing."""

    def skip_batches(self, n: int) -> None:
        """Pass over the next n batches without reading them: the order and the augmentation
        draws end where n forwards leave them, so a resumed run (solvers/train.py) continues
        the data stream of the run it resumes. A batch already loaded (by the net's shape
        pass) is the first of the n."""
        if n <= 0:
            return
        if self._batch is not None:
            self._batch = None
            n -= 1
        items = n * self.dataset.batch_size
        deque(itertools.islice(self._order, items), maxlen=0)
        self.dataset.augment.skip(items)


class VOCSegDataLayer(SegDataLayer):
    """PASCAL VOC segmentation: tops data, label."""

    DATASET = VOCSegDataset


class SBDDSegDataLayer(SegDataLayer):
    """SBD (Hariharan et al.) VOC labels: tops data, label."""

    DATASET = SBDDSegDataset


class PASCALContextSegDataLayer(SegDataLayer):
    """PASCAL-Context 59 classes + background: tops data, label."""

    DATASET = PASCALContextSegDataset


class SIFTFlowSegDataLayer(SegDataLayer):
    """SIFT Flow: tops data, sem, geo."""

    DATASET = SIFTFlowSegDataset


class NYUDSegDataLayer(SegDataLayer):
    """NYUDv2 40 classes: tops from `tops` (color, depth, hha, label)."""

    DATASET = NYUDSegDataset


class CityscapesSegDataLayer(SegDataLayer):
    """Cityscapes fine labels as 19 train ids: tops data, label."""

    DATASET = CityscapesSegDataset


class KITTIRoadSegDataLayer(SegDataLayer):
    """KITTI road (0 not road, 1 road): tops data, label."""

    DATASET = KITTIRoadSegDataset


class ADE20KSegDataLayer(SegDataLayer):
    """ADE20K / MIT Scene Parsing 150 classes: tops data, label."""

    DATASET = ADE20KSegDataset


class SYNTHIASegDataLayer(SegDataLayer):
    """SYNTHIA RAND-CITYSCAPES as Cityscapes ids: tops data, label."""

    DATASET = SYNTHIASegDataset


class SyntheticSegDataLayer(SegDataLayer):
    """Synthetic shapes rendered in memory: tops data, label."""

    DATASET = SyntheticSegDataset


_LAYERS = (VOCSegDataLayer, SBDDSegDataLayer, PASCALContextSegDataLayer, SIFTFlowSegDataLayer,
           NYUDSegDataLayer, CityscapesSegDataLayer, KITTIRoadSegDataLayer, ADE20KSegDataLayer,
           SYNTHIASegDataLayer, SyntheticSegDataLayer)

# module of the FCN reference repository that defined each layer
_REFERENCE_MODULES = {
    "VOCSegDataLayer": "voc_layers", "SBDDSegDataLayer": "voc_layers",
    "SIFTFlowSegDataLayer": "siftflow_layers", "NYUDSegDataLayer": "nyud_layers",
    "PASCALContextSegDataLayer": "pascalcontext_layers",
}

DATA_LAYERS: dict[str, type[SegDataLayer]] = {
    **{f"{__name__}.{c.__name__}": c for c in _LAYERS},
    **{f"{mod}.{name}": globals()[name] for name, mod in _REFERENCE_MODULES.items()},
}


def layer_class(module: str, layer: str) -> type[SegDataLayer]:
    """The class a python_param's module + layer names."""
    key = f"{module}.{layer}"
    if key not in DATA_LAYERS:
        raise FcnkitError(f"python_param module '{module}' layer '{layer}' is not a known data "
                          f"layer (known: {', '.join(sorted(DATA_LAYERS))})")
    return DATA_LAYERS[key]


def dataset_from_layer(module: str, layer: str, param_str: str | None, *,
                       name: str | None = None,
                       base_dir: str | Path | None = None) -> SegDataset:
    """The dataset a Python data layer would read, from its python_param fields.

    `name` (the prototxt layer's name) goes into error messages; relative dataset paths are
    taken from `base_dir` when given (else the working directory, as in Caffe).
    """
    cls = layer_class(module, layer)
    label = f"layer '{name}' ({layer})" if name else layer
    return cls.DATASET.from_param_str(param_str, layer=label, base_dir=base_dir)


__all__ = ["DATA_LAYERS", "SegDataLayer", "dataset_from_layer", "layer_class",
           *(c.__name__ for c in _LAYERS)]

