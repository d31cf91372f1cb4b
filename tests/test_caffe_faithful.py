"""What real Caffe refuses, fcnkit refuses too (issue 8: nothing may run on the engine that
fails on Caffe).

A weights file that defines a layer without blobs while the net's layer of that name has
parameters: Caffe's Net::CopyTrainedLayersFrom matches it by name and aborts ("Check failed:
target_blobs.size() == source_layer.blobs_size() (1 vs. 0) Incompatible number of blobs for
layer ..."). The engine's copy_from and the pycaffe path's pre-check (solvers.init_weights)
raise FcnkitError instead; where pycaffe imports, a subprocess shows Caffe itself aborting.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from netgen.errors import FcnkitError
from netgen.schema import parse_prototxt
from netgen.proto import caffe_pb2
from solvers import caffe_backend
from solvers.engine import Net
from solvers.init_weights import _check_fits
from surgery.caffemodel import load_weights, save_weights

NET = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
layer { name: "data_scale" type: "Scale" bottom: "data" top: "scaled"
        param { lr_mult: 0 } scale_param { filler { type: "constant" value: 0.5 } } }
layer { name: "conv" type: "Convolution" bottom: "scaled" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 } }
"""


@pytest.fixture(params=["binary", "hdf5"])
def files(tmp_path, request):
    """net.prototxt, and weights.caffemodel(.h5) holding conv's blobs and a blobless
    data_scale (in HDF5, an empty layer group, as Caffe writes paramless layers)."""
    net_param = parse_prototxt(NET, caffe_pb2.NetParameter)
    (tmp_path / "net.prototxt").write_text(NET)
    net = Net(net_param, "TEST")
    weights = net.to_weights()
    del weights["data_scale"]
    path = tmp_path / ("weights.caffemodel" + (".h5" if request.param == "hdf5" else ""))
    save_weights(path, weights, net=net_param, format=request.param)
    loaded = load_weights(path)
    assert set(loaded) == {"conv"} and loaded.blobless == {"input", "data_scale"}
    return net_param, tmp_path / "net.prototxt", path


def test_engine_refuses_a_blobless_layer_for_a_layer_with_parameters(files):
    net_param, _, weights = files
    with pytest.raises(FcnkitError, match=r"layer 'data_scale' has 0 blobs, the net expects 1"):
        Net(net_param, "TEST", weights=str(weights))


def test_pycaffe_path_checks_before_caffe_aborts(files):
    net_param, _, weights = files
    net = Net(net_param, "TEST")  # stands for solver.net: only .params and blob shapes are read
    with pytest.raises(FcnkitError, match=r"weights.caffemodel(.h5)?: layer 'data_scale' has 0 blobs"):
        _check_fits(net, load_weights(weights), weights)


def test_blobless_parameterless_layers_are_fine(files, tmp_path):
    """Layers without parameters (Input, ReLU ...) are written blobless by Caffe itself."""
    net_param, _, _ = files
    source = Net(net_param, "TEST")
    source.params["conv"][0].data = np.full((3, 2, 3, 3), 0.25)
    source.save(tmp_path / "all.caffemodel")
    net = Net(net_param, "TEST", weights=str(tmp_path / "all.caffemodel"))
    assert np.all(net.params["conv"][0].data == 0.25)


@pytest.mark.skipif(caffe_backend.pycaffe() is None,
                    reason=f"needs real pycaffe: {caffe_backend.unavailable_reason()}")
def test_real_caffe_aborts_on_it(files):
    _, proto, weights = files
    code = (f"import caffe; caffe.set_mode_cpu(); caffe.Net({str(proto)!r}, {str(weights)!r}, "
            "caffe.TEST)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GLOG_minloglevel": "0"})
    assert proc.returncode != 0
    assert "Incompatible number of blobs for layer data_scale" in proc.stderr


def test_blobless_is_what_the_file_holds_not_what_the_dict_lacks(files, tmp_path):
    """Only layers the file defines without blobs are blobless: a layer dropped from the loaded
    Weights (or never in a partial source) is left to the net's own init, as Caffe leaves the
    layers a weights file does not name."""
    net_param, _, _ = files
    source = Net(net_param, "TEST")
    source.params["conv"][0].data = np.full((3, 2, 3, 3), 0.25)
    source.save(tmp_path / "all.caffemodel")
    loaded = load_weights(tmp_path / "all.caffemodel")
    del loaded["conv"]
    assert "conv" not in loaded.blobless
    net = Net(net_param, "TEST")
    net.copy_from(loaded)
    assert not np.any(net.params["conv"][0].data == 0.25)
