"""A Python layer that tries, on its first forward, each thing a layer might do with pycaffe's
bottom/top vectors and blobs, and records what happened: the same class runs inside real Caffe
(derived from caffe.Layer where pycaffe imports) and inside fcnkit's engine."""
from __future__ import annotations

import builtins

import numpy as np

from solvers.caffe_backend import pycaffe
from solvers.engine.pylayer import Layer

_caffe = pycaffe()
Base = _caffe.Layer if _caffe is not None else Layer


def _iterate(vec):
    return [None for _ in vec]


def _unpack(vec):
    a, b = vec
    return 2


def _copy_then(change):
    """Change a slice (a copy) of the vector, so later probes still see the layer's tops."""
    def probe(bottom, top):
        v = top[0:2]
        change(v, top)
        return len(v)
    return probe


def _assign(blob, name):
    setattr(blob, name, np.zeros(blob.data.shape, np.float32))


def _reshape_then(value):
    def probe(bottom, top):
        top[1].reshape(2, 3)
        return value(top[1])
    return probe


# name -> probe(bottom, top); bottom holds one blob, top two (a and b). Results are plain values.
PROBES = {
    "len(top)": lambda bottom, top: len(top),
    "len(bottom)": lambda bottom, top: len(bottom),
    "top[0] has .data": lambda bottom, top: isinstance(top[0].data, np.ndarray),
    "top[-1] is top[1]": lambda bottom, top: top[-1] in top[1:2] and top[-1] not in top[0:1],
    "top[2]": lambda bottom, top: top[2],
    "top[-3]": lambda bottom, top: top[-3],
    "top['0']": lambda bottom, top: top["0"],
    "top[1.0]": lambda bottom, top: top[1.0],
    "top[np.int64(0)]": lambda bottom, top: top[np.int64(0)],
    "len(top[0:1])": lambda bottom, top: len(top[0:1]),
    "len(top[5:])": lambda bottom, top: len(top[5:]),
    "top[::1]": lambda bottom, top: top[::1],
    "top[0] in top": lambda bottom, top: top[0] in top,
    "bottom[0] in top": lambda bottom, top: bottom[0] in top,
    "5 in top": lambda bottom, top: 5 in top,
    "None in top": lambda bottom, top: None in top,
    "reversed(top)": lambda bottom, top: [isinstance(b.data, np.ndarray) for b in reversed(top)],
    "for t in top": lambda bottom, top: _iterate(top),
    "for b in bottom": lambda bottom, top: _iterate(bottom),
    "list(top)": lambda bottom, top: list(top),
    "zip(top, names)": lambda bottom, top: list(zip(top, ["a", "b"])),
    "a, b = top": lambda bottom, top: _unpack(top),
    "for t in top[0:0]": lambda bottom, top: _iterate(top[0:0]),
    "top + top": lambda bottom, top: top + top,
    "copy.append(blob)": _copy_then(lambda v, top: v.append(top[0])),
    "copy.append(5)": _copy_then(lambda v, top: v.append(5)),
    "copy.append(None)": _copy_then(lambda v, top: v.append(None)),
    "copy.extend([5])": _copy_then(lambda v, top: v.extend([5])),
    "del copy[0]": _copy_then(lambda v, top: v.__delitem__(0)),
    "copy[0] = 5": _copy_then(lambda v, top: v.__setitem__(0, 5)),
    "copy[0] = blob": _copy_then(lambda v, top: v.__setitem__(0, top[1])),
    "copy[0:1] = top": _copy_then(lambda v, top: v.__setitem__(slice(0, 1), top)),
    "copy[0:1] = [5]": _copy_then(lambda v, top: v.__setitem__(slice(0, 1), [5])),
    "copy[0:1] = 5": _copy_then(lambda v, top: v.__setitem__(slice(0, 1), 5)),
    "top[1].data = x": lambda bottom, top: _assign(top[1], "data"),
    "top[1].diff = x": lambda bottom, top: _assign(top[1], "diff"),
    "top[1].reshape(2, 3)": _reshape_then(lambda b: b.data.shape),
    "top[1].reshape(2.0)": lambda bottom, top: top[1].reshape(2.0),
    "top[1].reshape((2, 3))": lambda bottom, top: top[1].reshape((2, 3)),
    "top[1].reshape(np.int64(2))": lambda bottom, top: top[1].reshape(np.int64(2)),
    "top[1].reshape(n=2)": lambda bottom, top: top[1].reshape(n=2),
    "shape == (2, 3)": _reshape_then(lambda b: b.shape == (2, 3)),
    "tuple(shape)": _reshape_then(lambda b: tuple(b.shape)),
    "len(shape), shape[-1]": _reshape_then(lambda b: (len(b.shape), b.shape[-1])),
    "count": _reshape_then(lambda b: b.count),
    "num, channels, height, width": _reshape_then(lambda b: (b.num, b.channels, b.height, b.width)),
    "data writeable, dtype": _reshape_then(lambda b: (b.data.flags.writeable, str(b.data.dtype))),
    "data is a view": _reshape_then(lambda b: (b.data.__setitem__((0, 0), 7.0), float(b.data[0, 0]))[1]),
    "diff is a view": _reshape_then(lambda b: (b.diff.__setitem__((0, 1), 5.0), float(b.diff[0, 1]))[1]),
}


def _outcome(probe, bottom, top):
    """('ok', value) or ('raises', the builtin exception class the error is an instance of)."""
    try:
        return ("ok", probe(bottom, top))
    except Exception as e:
        builtin = next(c for c in type(e).__mro__ if getattr(builtins, c.__name__, None) is c)
        return ("raises", builtin.__name__)


class Probe(Base):
    """data -> a (a copy of data) and b (a scratch top the probes reshape)."""

    results: dict = {}
    calls: list = []

    def setup(self, bottom, top):
        Probe.calls.append(("setup", self.param_str, self.phase))

    def reshape(self, bottom, top):
        Probe.calls.append("reshape")
        top[0].reshape(*bottom[0].data.shape)
        top[1].reshape(2, 3)

    def forward(self, bottom, top):
        Probe.calls.append("forward")
        if not Probe.results:
            Probe.results.update({k: _outcome(p, bottom, top) for k, p in PROBES.items()})
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        Probe.calls.append(("backward", type(propagate_down).__name__, list(propagate_down)))
        bottom[0].diff[...] = top[0].diff


class IterateTop(Base):
    """The kind the engine must refuse: walks its tops with `for`, as pycaffe cannot."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        for t in top:
            t.reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


class NotALayer:
    """Has the methods but does not derive from caffe.Layer: Caffe cannot use it."""

    def setup(self, bottom, top):
        pass
