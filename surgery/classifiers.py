"""The ImageNet classifiers FCNs start from, as deploy nets: VGG16 and CaffeNet (AlexNet).

Layer names and options match the published deploy prototxts (VGG_ILSVRC_16_layers,
bvlc_reference_caffenet), so their caffemodels load by name. The full-size nets are committed
as prototxt files in surgery/classifiers/ (regenerate with `python -m surgery.classifiers`);
`width` scales hidden channels for small test nets. `fully_convolutional` turns a classifier's
InnerProduct layers into convolutions with the same names, the net that convolutionalised
weights run in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from netgen.errors import FcnkitError
from netgen.netspec import L, NetSpec, P
from netgen.proto import caffe_pb2
from netgen.schema import write_prototxt

from .caffemodel import Weights
from netgen.legacy import upgrade_net
from .shapes import blob_shapes

FOLDER = Path(__file__).resolve().parent / "classifiers"
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# CaffeNet convolutions: index, kernel, channels, stride, pad, group, then pool/norm after.
CAFFENET_CONVS = ((1, 11, 96, 4, 0, 1, ("pool", "norm")), (2, 5, 256, 1, 2, 2, ("pool", "norm")),
                  (3, 3, 384, 1, 1, 1, ()), (4, 3, 384, 1, 1, 2, ()), (5, 3, 256, 1, 1, 2, ("pool",)))
FC_CHANNELS = 4096


def _scaled(channels: int, width: float, multiple: int = 1) -> int:
    return max(multiple, int(round(channels * width / multiple)) * multiple)


def _classifier_head(n: NetSpec, bottom, width: float, num_classes: int) -> None:
    """fc6, fc7 (ReLU + Dropout each, in place), fc8 and the Softmax `prob`."""
    for i in (6, 7):
        n[f"fc{i}"] = L.InnerProduct(bottom, num_output=_scaled(FC_CHANNELS, width))
        n[f"relu{i}"] = L.ReLU(n[f"fc{i}"], in_place=True)
        n[f"drop{i}"] = bottom = L.Dropout(n[f"relu{i}"], dropout_ratio=0.5, in_place=True)
    n.fc8 = L.InnerProduct(bottom, num_output=num_classes)
    n.prob = L.Softmax(n.fc8)


def vgg16(num_classes: int = 1000, *, width: float = 1.0, batch: int = 10,
          size: int = 224) -> caffe_pb2.NetParameter:
    """VGG_ILSVRC_16_layers deploy: 13 3x3 convs in 5 blocks, 2x2 max pools, fc6-fc8."""
    n = NetSpec()
    n.data = bottom = L.Input(shape=dict(dim=[batch, 3, size, size]))
    for b, block in enumerate(VGG16_BLOCKS, 1):
        for c, channels in enumerate(block, 1):
            name = f"{b}_{c}"
            n[f"conv{name}"] = L.Convolution(bottom, num_output=_scaled(channels, width),
                                             kernel_size=3, pad=1)
            n[f"relu{name}"] = bottom = L.ReLU(n[f"conv{name}"], in_place=True)
        n[f"pool{b}"] = bottom = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    _classifier_head(n, bottom, width, num_classes)
    net = n.to_proto()
    net.name = "VGG_ILSVRC_16_layers"
    return net


def caffenet(num_classes: int = 1000, *, width: float = 1.0, batch: int = 10,
             size: int = 227) -> caffe_pb2.NetParameter:
    """bvlc_reference_caffenet deploy (AlexNet with pooling before LRN), groups in conv2/4/5."""
    n = NetSpec()
    n.data = bottom = L.Input(shape=dict(dim=[batch, 3, size, size]))
    for i, kernel, channels, stride, pad, group, after in CAFFENET_CONVS:
        options = dict(num_output=_scaled(channels, width, 2), kernel_size=kernel)
        options.update({k: v for k, v in (("pad", pad), ("stride", stride), ("group", group))
                        if v != (0 if k == "pad" else 1)})
        n[f"conv{i}"] = L.Convolution(bottom, **options)
        n[f"relu{i}"] = bottom = L.ReLU(n[f"conv{i}"], in_place=True)
        for step in after:
            if step == "pool":
                n[f"pool{i}"] = bottom = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3,
                                                   stride=2)
            else:
                n[f"norm{i}"] = bottom = L.LRN(bottom, local_size=5, alpha=1e-4, beta=0.75)
    _classifier_head(n, bottom, width, num_classes)
    net = n.to_proto()
    net.name = "CaffeNet"
    return net


CLASSIFIERS: dict[str, Callable[..., caffe_pb2.NetParameter]] = {
    "vgg16": vgg16, "caffenet": caffenet}


def prototxt_path(name: str) -> Path:
    return FOLDER / f"{name}_deploy.prototxt"


def write_prototxts(folder: Path = FOLDER) -> list[Path]:
    """(Re)write the committed deploy prototxts of the full-size classifiers."""
    paths = []
    for name, build in CLASSIFIERS.items():
        path = folder / prototxt_path(name).name
        write_prototxt(path, build())
        paths.append(path)
    return paths


def detect(weights: Weights) -> str | None:
    """Which classifier `weights` come from: "vgg16", "vgg19", "caffenet" or None.

    Told by layer names and the first convolution's shape (11x11 stride-4 AlexNet kernels).
    """
    names = set(weights)
    if {"conv1_1", "conv5_3", "fc6", "fc7"} <= names:
        return "vgg19" if "conv5_4" in names else "vgg16"
    conv1 = weights.get("conv1")
    if conv1 and conv1[0].shape[-2:] == (11, 11) and {"conv5", "fc6", "fc7"} <= names:
        return "caffenet"
    return None


def fully_convolutional(net: caffe_pb2.NetParameter,
                        input_size: tuple[int, int] | None = None) -> caffe_pb2.NetParameter:
    """`net` with each InnerProduct made a Convolution of the same name and outputs.

    The kernel covers the layer's whole input (7x7 for VGG16's fc6, 1x1 after that), so the
    classifier's weights fit after a reshape and the converted net computes the classifier's
    scores at every stride-32 window of a larger image.
    """
    net = upgrade_net(net)
    shapes = blob_shapes(net, input_size=input_size)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for layer in out.layer:
        if layer.type != "InnerProduct":
            continue
        ip = layer.inner_product_param
        bottom = shapes[layer.bottom[0]]
        if ip.transpose or ip.axis != 1 or bottom is None or len(bottom) not in (2, 4):
            raise FcnkitError(f"layer {layer.name!r}: only InnerProduct over axis 1 of an NxC or "
                              "NxCxHxW input can become a convolution")
        kernel = bottom[2:] if len(bottom) == 4 else (1, 1)
        conv = caffe_pb2.ConvolutionParameter(num_output=ip.num_output, bias_term=ip.bias_term)
        if kernel[0] == kernel[1]:
            conv.kernel_size.append(kernel[0])
        else:
            conv.kernel_h, conv.kernel_w = kernel
        for filler in ("weight_filler", "bias_filler"):
            if ip.HasField(filler):
                getattr(conv, filler).CopyFrom(getattr(ip, filler))
        layer.ClearField("inner_product_param")
        layer.type = "Convolution"
        layer.convolution_param.CopyFrom(conv)
    return out


if __name__ == "__main__":
    for written in write_prototxts():
        print(written)
