"""Independent check: OpenCV's Caffe importer loads every generated deploy net with random weights,
and for any input size each score blob comes out with the input's height and width.

Nets are width-scaled (1/32 of the channels), and datasets with more than 21 classes run with 8:
neither changes a kernel, stride, pad or crop offset, so alignment and sizes are checked exactly
as at full size, only faster (a 60-class FCN-32s upscore alone is a 60x60x64x64 deconvolution).
"""
import cv2
import numpy as np
import pytest

from fcn_helpers import random_weights
from netgen.presets import DATASETS, DEFAULT_SET, resolve
from netgen.schema import read_net
from netgen.writer import generate

SIZES = [(1, 1), (17, 33), (224, 224), (375, 500), (500, 500)]
# every model of the default set, and the nets it has only on VOC on one of fcnkit's datasets
MODELS = DEFAULT_SET + ("synthetic-fcn8s-atonce", "cityscapes-fcn-alexnet")


@pytest.mark.parametrize("name", MODELS)
def test_opencv_runs_deploy_and_scores_match_input_size(tmp_path, name):
    dataset = resolve(name).dataset
    classes = 8 if dataset.num_classes > 21 and len(dataset.heads) == 1 else None
    folder = generate(name, tmp_path, classes, width=1 / 32)
    deploy = folder / "deploy.prototxt"
    net = read_net(deploy)
    weights = folder / "random.caffemodel"
    weights.write_bytes(random_weights(net).SerializeToString())
    cvnet = cv2.dnn.readNetFromCaffe(str(deploy), str(weights))

    source = net.layer[0]
    assert source.type == "Input"
    read = {b for l in net.layer for b in l.bottom}
    scores = [l for l in net.layer if l.type == "Crop" and l.top[0] not in read]  # final crops
    classes = {l.top[0]: next(u for u in net.layer if u.top[0] == l.bottom[0]).convolution_param.num_output
               for l in scores}
    assert scores and all(l.name.startswith("score") for l in scores)
    rng = np.random.default_rng(0)
    for h, w in SIZES:
        for top, shape in zip(source.top, source.input_param.shape):
            cvnet.setInput(rng.standard_normal((1, shape.dim[1], h, w)).astype(np.float32), top)
        outs = cvnet.forward([l.top[0] for l in scores])
        for layer, out in zip(scores, outs):
            assert out.shape == (1, classes[layer.top[0]], h, w), (name, layer.name, (h, w))
            assert np.isfinite(out).all()


def test_class_counts_follow_the_dataset(tmp_path):
    """The score blobs' channels are the dataset's classes, whatever the width."""
    for ds in ("pascalcontext", "ade20k", "kitti-road"):
        net = read_net(generate(f"{ds}-fcn32s", tmp_path, width=1 / 32) / "deploy.prototxt")
        up = next(l for l in net.layer if l.name == "upscore")
        assert up.convolution_param.num_output == DATASETS[ds].num_classes
