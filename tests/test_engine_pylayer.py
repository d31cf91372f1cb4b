"""The engine hands Python layers pycaffe's interface, no looser (solvers/engine/pylayer.py).

Each fact below is what real pycaffe does, from BVLC caffe master 9b89154:
python/caffe/_caffe.cpp (RawBlobVec = boost.python vector_indexing_suite over
vector<Blob<float>*> with NoProxy; Blob's shape/num/.../count/reshape/data/diff; Blob_Reshape),
include/caffe/layers/python_layer.hpp (param_str, phase, the calls), include/caffe/layer.hpp
(Forward reshapes first), src/caffe/layer_factory.cpp (cls(param), extract PythonLayer), and
boost/python/suite/indexing/{indexing_suite,vector_indexing_suite}.hpp + detail (index, slice and
iterator rules: elements that are raw pointers have no by-value converter, so iterating raises
TypeError). The same table is checked against real Caffe where `import caffe` works.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pylayer_probe
from engine_helpers import net_param
from netgen.errors import FcnkitError
from solvers.caffe_backend import pycaffe
from solvers.engine import Net
from solvers.engine.blob import Blob
from solvers.engine.pylayer import BoolVec, IntVec, PyBlob, RawBlobVec

NET = '''force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "probe" type: "Python" bottom: "data" top: "a" top: "b"
  python_param { module: "pylayer_probe" layer: "%s" param_str: "{'x': 1}" } }
layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "data" top: "loss" }
'''

OK, RAISES = "ok", "raises"
# What pycaffe allows and refuses (probe name -> outcome, see pylayer_probe.PROBES)
FACTS = {
    "len(top)": (OK, 2),
    "len(bottom)": (OK, 1),
    "top[0] has .data": (OK, True),
    "top[-1] is top[1]": (OK, True),          # negative indices count from the end
    "top[2]": (RAISES, "IndexError"),         # "Index out of range"
    "top[-3]": (RAISES, "IndexError"),
    "top['0']": (RAISES, "TypeError"),        # "Invalid index type"
    "top[1.0]": (RAISES, "TypeError"),
    "top[np.int64(0)]": (RAISES, "TypeError"),   # only a Python int converts (PyLong_Check)
    "len(top[0:1])": (OK, 1),                 # a slice is a new RawBlobVec
    "len(top[5:])": (OK, 0),                  # slice bounds are clipped
    "top[::1]": (RAISES, "IndexError"),       # "slice step size not supported."
    "top[0] in top": (OK, True),              # the same Blob pointer
    "bottom[0] in top": (OK, False),
    "5 in top": (OK, False),
    "None in top": (OK, False),
    "reversed(top)": (OK, [True, True]),      # len + indexing: the sequence protocol
    "for t in top": (RAISES, "TypeError"),    # no to_python (by-value) converter for Blob<float>*
    "for b in bottom": (RAISES, "TypeError"),
    "list(top)": (RAISES, "TypeError"),
    "zip(top, names)": (RAISES, "TypeError"),
    "a, b = top": (RAISES, "TypeError"),
    "for t in top[0:0]": (OK, []),            # nothing to convert: an empty vector iterates
    "top + top": (RAISES, "TypeError"),
    "copy.append(blob)": (OK, 3),
    "copy.append(5)": (RAISES, "TypeError"),  # "Attempting to append an invalid type"
    "copy.append(None)": (OK, 3),             # None converts to a NULL Blob*
    "copy.extend([5])": (RAISES, "TypeError"),
    "del copy[0]": (OK, 1),
    "copy[0] = 5": (RAISES, "TypeError"),     # "Invalid assignment"
    "copy[0] = blob": (OK, 2),
    "copy[0:1] = top": (OK, 3),               # a sequence is read by len() and indexing
    "copy[0:1] = [5]": (RAISES, "TypeError"), # "Invalid sequence element"
    "copy[0:1] = 5": (RAISES, "AttributeError"),  # no __len__
    "top[1].data = x": (RAISES, "AttributeError"),   # data/diff are read-only properties
    "top[1].diff = x": (RAISES, "AttributeError"),
    "top[1].reshape(2, 3)": (OK, (2, 3)),
    "top[1].reshape(2.0)": (RAISES, "TypeError"),    # each dimension is extract<int>
    "top[1].reshape((2, 3))": (RAISES, "TypeError"),
    "top[1].reshape(np.int64(2))": (RAISES, "TypeError"),
    "top[1].reshape(n=2)": (RAISES, "RuntimeError"),  # "Blob.reshape takes no kwargs"
    "shape == (2, 3)": (OK, False),           # shape is an IntVec, not a tuple
    "tuple(shape)": (OK, (2, 3)),
    "len(shape), shape[-1]": (OK, (2, 3)),
    "count": (OK, 6),
    "num, channels, height, width": (OK, (2, 3, 1, 1)),  # 1 past the last axis
    "data writeable, dtype": (OK, (True, "float32")),
    "data is a view": (OK, 7.0),
    "diff is a view": (OK, 5.0),
}
# setup and one reshape when the net is made (Layer::SetUp), reshape + forward at each forward
# (Layer::Forward), backward(top, propagate_down: BoolVec, bottom); param_str and phase (TEST = 1)
CALLS = [("setup", "{'x': 1}", 1), "reshape", "reshape", "forward", ("backward", "BoolVec", [True])]


def _probe_run(make_net, forward, backward):
    pylayer_probe.Probe.results.clear()
    pylayer_probe.Probe.calls.clear()
    net = make_net()
    forward(net)
    backward(net)
    return dict(pylayer_probe.Probe.results), list(pylayer_probe.Probe.calls)


def _engine_net(layer: str) -> Net:
    return Net(net_param(NET % layer), "TEST", allow_python_modules=True)


def _feed_forward(net) -> None:
    net.blobs["data"].data[...] = np.arange(6).reshape(2, 3)
    net.forward()


def test_engine_gives_python_layers_pycaffes_interface():
    results, calls = _probe_run(lambda: _engine_net("Probe"), _feed_forward,
                                lambda net: net.backward())
    assert results == FACTS
    assert calls == CALLS


@pytest.mark.skipif(pycaffe() is None, reason="needs pycaffe (import caffe); CI has no Caffe")
def test_real_caffe_agrees_with_the_facts(tmp_path):
    caffe = pycaffe()
    path = tmp_path / "probe.prototxt"

    def make(layer):
        path.write_text(NET % layer)
        return caffe.Net(str(path), caffe.TEST)

    results, calls = _probe_run(lambda: make("Probe"), _feed_forward, lambda net: net.backward())
    assert results == FACTS
    assert calls == CALLS
    with pytest.raises(TypeError, match="No to_python \\(by-value\\) converter"):
        make("IterateTop")


def test_engine_refuses_for_t_in_top():
    """The kind that reached users: a layer iterating its tops runs nowhere in Caffe, so the
    engine refuses it too, with pycaffe's TypeError, naming the layer (no Caffe needed)."""
    with pytest.raises(TypeError, match=r"layer 'probe' \(Python\): reshape\(\) failed: TypeError: "
                                        r"No to_python \(by-value\) converter found for C\+\+ type: "
                                        r"caffe::Blob<float>\*") as e:
        _engine_net("IterateTop")
    assert isinstance(e.value, FcnkitError)


def test_engine_refuses_a_class_that_is_not_a_layer():
    """Caffe builds cls(param) and extracts a PythonLayer: the class must derive from caffe.Layer."""
    with pytest.raises(TypeError, match="python_param pylayer_probe.NotALayer is not a Python "
                                        "layer class: derive it from caffe.Layer") as e:
        _engine_net("NotALayer")
    assert isinstance(e.value, FcnkitError)


def test_an_exception_keeps_the_class_the_layer_raised():
    """pycaffe lets a layer's own exception out of net.forward(); the engine's is that class
    too (and a FcnkitError naming the layer)."""
    text = NET.replace("force_backward: true\n", "") % "Probe"
    text = text.replace("pylayer_probe", "engine_pylayer").replace('"Probe"', '"Broken"')
    with pytest.raises(ValueError, match="layer 'probe' \\(Python\\): setup\\(\\) failed: "
                                         "ValueError: no such thing") as e:
        Net(net_param(text), "TEST", allow_python_modules=True)
    assert isinstance(e.value, FcnkitError)


def _views(*shapes) -> RawBlobVec:
    return RawBlobVec([PyBlob(Blob(f"b{i}", torch.zeros(s), host=True)) for i, s in enumerate(shapes)])


def test_blob_vector_messages_are_boosts():
    top = _views((1,), (2,))
    with pytest.raises(IndexError, match="^Index out of range$"):
        top[2]
    with pytest.raises(TypeError, match="^Invalid index type$"):
        top["0"]
    with pytest.raises(IndexError, match="^slice step size not supported.$"):
        top[::2]
    with pytest.raises(TypeError, match="^Attempting to append an invalid type$"):
        top.append(1)
    with pytest.raises(TypeError, match="^Invalid assignment$"):
        top[0] = 1
    assert isinstance(top[0:1], RawBlobVec) and len(top[-5:]) == 2 and list(reversed(top[0:0])) == []


def test_blob_view_rules():
    blob = _views((2, 3, 4, 5, 6))[0]   # (unpacking the vector would raise, as in pycaffe)
    assert isinstance(blob.shape, IntVec) and list(blob.shape) == [2, 3, 4, 5, 6] and blob.count == 720
    with pytest.raises(FcnkitError, match="legacy accessors .* > 4 axes"):
        blob.num                    # a fatal CHECK in Caffe (Blob::LegacyShape)
    with pytest.raises(FcnkitError, match="none negative"):
        blob.reshape(2, -1)         # a fatal CHECK in Caffe (Blob::Reshape)
    with pytest.raises(TypeError, match="C\\+\\+ rvalue of type int from this Python object of type int64"):
        blob.reshape(np.int64(2))
    blob.reshape()
    assert blob.count == 1 and tuple(blob.shape) == () and blob.num == 1   # a scalar blob
    assert list(BoolVec([True, False])) == [True, False]
