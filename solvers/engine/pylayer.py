"""pycaffe's Python-layer interface, no looser: what a `type: "Python"` layer is handed in Caffe.

Caffe builds the layer as `cls(param)` (a class deriving from caffe.Layer), sets `param_str` and
`phase` (0 TRAIN, 1 TEST), then calls setup(bottom, top) and reshape(bottom, top) once when the
net is made, reshape and forward(bottom, top) at every forward, and backward(top,
propagate_down, bottom). Sources: BVLC caffe (master 9b89154) include/caffe/layers/
python_layer.hpp, src/caffe/layer_factory.cpp (GetPythonLayer), include/caffe/layer.hpp
(Forward calls Reshape first), python/caffe/_caffe.cpp, and boost.python's
vector_indexing_suite (suite/indexing/vector_indexing_suite.hpp, indexing_suite.hpp).

bottom and top are `RawBlobVec`: vector_indexing_suite over `vector<Blob<float>*>`, each call
a fresh copy of the vector. What it allows, mirrored here:
  - len(top); top[i], negative i counting from the end (IndexError "Index out of range"; a
    non-int index: TypeError "Invalid index type"); top[a:b] a new RawBlobVec (a slice step:
    IndexError "slice step size not supported."); `blob in top` (the same blob); reversed(top);
    append/extend/assignment/del of blobs or None (a NULL pointer) (they change only the
    layer's copy: Caffe never sees them; anything else: TypeError).
  - iterating (for, zip, list, unpacking) raises TypeError "No to_python (by-value) converter
    found for C++ type: caffe::Blob<float>*" at the first element (an empty vector iterates).
propagate_down is a BoolVec (indexable and iterable). A blob (`PyBlob`) has .data and .diff
(writeable numpy views that cannot be assigned to: `blob.data = x` is an AttributeError),
.reshape(*ints) (keywords: RuntimeError; anything but a Python int: TypeError), .count,
.shape (an IntVec, not a tuple: `blob.shape == (1, 2)` is False, as in pycaffe),
.num/.channels/.height/.width (1 past the last axis; more than 4 axes is an error, a fatal
CHECK in Caffe).
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator

from netgen.errors import FcnkitError, FcnkitTypeError
from netgen.shapes import MAX_BLOB_AXES

from .blob import Blob



class Layer:
    """The base a Python layer derives from where pycaffe is absent (caffe.Layer's stand-in).

    Built as cls(param), as Caffe's layer factory does; `param` is opaque (pycaffe's
    LayerParameter exposes no fields). `param_str` and `phase` are set after construction.
    """

    def __init__(self, param: "LayerParameter") -> None:
        pass

    @property
    def type(self) -> str:
        return "Python"


class LayerParameter:
    """What pycaffe hands a Python layer's constructor: a LayerParameter with nothing readable."""

    __slots__ = ()


def layer_bases() -> tuple[type, ...]:
    """Classes a Python layer may derive from: fcnkit's Layer, and caffe.Layer once pycaffe
    has been imported (a class deriving from it means it has)."""
    caffe_layer = getattr(sys.modules.get("caffe"), "Layer", None)
    return (Layer,) if not isinstance(caffe_layer, type) else (Layer, caffe_layer)


def make_layer(cls: type, name: str) -> Any:
    """The layer object for python_param's class, refused where Caffe refuses it.

    Raises FcnkitTypeError naming `name` (python_param's module.layer) when the class derives
    from neither caffe.Layer nor fcnkit's Layer. Caffe prints a TypeError there ("X() takes no
    arguments", or "No registered converter ... shared_ptr<caffe::PythonLayer<float> >") and
    caffe.Net then raises SystemError ("returned NULL without setting an exception"); the
    TypeError is the one that says what is wrong. A caffe.Layer subclass is made without
    caffe.Layer's C++ constructor, which needs a C++ LayerParameter; one with its own
    __init__ is refused for the same reason.
    """
    bases = layer_bases()
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        raise FcnkitTypeError(
            f"python_param {name} is not a Python layer class: derive it from caffe.Layer (or "
            f"solvers.engine.pylayer.Layer without pycaffe), as Caffe requires")
    if issubclass(cls, Layer):
        return cls(LayerParameter())
    caffe_layer = bases[1]
    if cls.__init__ is not caffe_layer.__init__:
        raise FcnkitTypeError(f"python_param {name}: a caffe.Layer subclass with its own "
                              f"__init__ needs a C++ LayerParameter, which only Caffe can make")
    return cls.__new__(cls)


class _Vector:
    """boost.python's vector_indexing_suite (NoProxy) over a copy of a C++ vector.

    Subclasses say which Python values are elements (`_accepts`) and how an element leaves
    the vector when iterated (`_by_value`).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable = ()) -> None:
        self._items = list(items)

    @staticmethod
    def _accepts(value: Any) -> bool:
        raise NotImplementedError

    @staticmethod
    def _same(a: Any, b: Any) -> bool:
        return a == b

    def _by_value(self, item: Any) -> Any:
        return item

    def _index(self, i: Any) -> int:
        if not isinstance(i, int):
            raise TypeError("Invalid index type")
        n = len(self._items)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError("Index out of range")
        return j

    @staticmethod
    def _range(s: slice) -> slice:
        if s.step is not None:
            raise IndexError("slice step size not supported.")
        return s

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return type(self)(self._items[self._range(i)])
        return self._items[self._index(i)]

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            part = self._range(i)
            if self._accepts(value):
                self._items[part] = [value]
                return
            # otherwise a sequence, read by __len__ and indexing (so another vector will do)
            values = [value[k] for k in range(value.__len__())]
            if not all(self._accepts(v) for v in values):
                raise TypeError("Invalid sequence element")
            self._items[part] = values
            return
        if not self._accepts(value):
            raise TypeError("Invalid assignment")
        self._items[self._index(i)] = value

    def __delitem__(self, i: Any) -> None:
        if isinstance(i, slice):
            del self._items[self._range(i)]
        else:
            del self._items[self._index(i)]

    def __contains__(self, value: Any) -> bool:
        return self._accepts(value) and any(self._same(x, value) for x in self._items)

    def __iter__(self) -> Iterator:
        for item in self._items:
            yield self._by_value(item)

    def append(self, value: Any) -> None:
        if not self._accepts(value):
            raise TypeError("Attempting to append an invalid type")
        self._items.append(value)

    def extend(self, values: Iterable) -> None:
        new = []
        for v in values:
            if not self._accepts(v):
                raise TypeError("Incompatible Data Type")
            new.append(v)
        self._items.extend(new)


class IntVec(_Vector):
    """pycaffe's IntVec (vector<int>): what Blob.shape returns."""

    __slots__ = ()

    @staticmethod
    def _accepts(value: Any) -> bool:
        return isinstance(value, int)


class BoolVec(_Vector):
    """pycaffe's BoolVec (vector<bool>): a Python layer's propagate_down."""

    __slots__ = ()

    @staticmethod
    def _accepts(value: Any) -> bool:
        return isinstance(value, bool)


class RawBlobVec(_Vector):
    """pycaffe's RawBlobVec (vector<Blob<float>*>): a Python layer's bottom and top."""

    __slots__ = ()

    @staticmethod
    def _accepts(value: Any) -> bool:
        return value is None or isinstance(value, PyBlob)   # None converts to a NULL Blob*

    @staticmethod
    def _same(a: "PyBlob | None", b: "PyBlob | None") -> bool:
        return getattr(a, "_blob", None) is getattr(b, "_blob", None)   # pointer equality

    def _by_value(self, item: Any) -> Any:
        raise TypeError("No to_python (by-value) converter found for C++ type: caffe::Blob<float>* "
                        "(pycaffe's bottom/top vectors cannot be iterated: use top[i] and len(top))")


class PyBlob:
    """pycaffe's Blob over one of the engine's host blobs: nothing more than pycaffe exposes."""

    __slots__ = ("_blob",)

    def __init__(self, blob: Blob) -> None:
        self._blob = blob

    @property
    def shape(self) -> IntVec:
        return IntVec(self._blob.shape)

    @property
    def count(self) -> int:
        return self._blob.count

    def _legacy(self, i: int) -> int:
        shape = self._blob.shape
        if len(shape) > 4:
            raise FcnkitError(f"blob {self._blob.name!r}: cannot use legacy accessors "
                              f"(num/channels/height/width) on blobs with > 4 axes {shape}")
        return shape[i] if i < len(shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *dims: Any, **kwargs: Any) -> None:
        """New shape from one Python int per axis (Caffe's Blob_Reshape rules)."""
        if kwargs:
            raise RuntimeError("Blob.reshape takes no kwargs")
        for d in dims:
            if not isinstance(d, int):
                raise TypeError(f"No registered converter was able to produce a C++ rvalue of "
                                f"type int from this Python object of type {type(d).__name__}")
        if len(dims) > MAX_BLOB_AXES or any(d < 0 for d in dims):
            raise FcnkitError(f"blob {self._blob.name!r}: cannot reshape to {dims} "
                              f"(at most {MAX_BLOB_AXES} axes, none negative)")
        self._blob.reshape(*dims)

    @property
    def data(self):
        return self._blob.data

    @property
    def diff(self):
        return self._blob.diff

    def __repr__(self) -> str:
        return f"<Blob {self._blob.name!r} {self._blob.shape}>"
