"""Random weights for a deploy net, written as a .caffemodel through the schema (test helper).

Blob shapes are worked out here from the layer definitions alone (channels walked top by top),
so OpenCV loading the pair is an independent check of the generated prototxt.
"""
from __future__ import annotations

import numpy as np

from netgen.proto import caffe_pb2


def _param_shapes(layer: caffe_pb2.LayerParameter, cin: int) -> list[tuple[int, ...]]:
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        k, g, cout = p.kernel_size[0], p.group, p.num_output
        weight = (cout, cin // g, k, k) if layer.type == "Convolution" else (cin, cout // g, k, k)
        return [weight] + ([(cout,)] if p.bias_term else [])
    if layer.type == "Scale":
        return [(cin,)]
    return []


def _out_channels(layer: caffe_pb2.LayerParameter, cins: list[int]) -> int:
    if layer.type in ("Convolution", "Deconvolution"):
        return layer.convolution_param.num_output
    if layer.type == "Concat":
        return sum(cins)
    return cins[0]


def random_weights(net: caffe_pb2.NetParameter, seed: int = 0) -> caffe_pb2.NetParameter:
    """A NetParameter holding a random blob for every learnable parameter of `net`."""
    rng = np.random.default_rng(seed)
    channels: dict[str, int] = {}
    weights = caffe_pb2.NetParameter()
    for layer in net.layer:
        if layer.type == "Input":
            for top, shape in zip(layer.top, layer.input_param.shape):
                channels[top] = shape.dim[1]
            continue
        cins = [channels[b] for b in layer.bottom]
        shapes = _param_shapes(layer, cins[0])
        if shapes:
            out = weights.layer.add(name=layer.name, type=layer.type)
            for shape in shapes:
                blob = out.blobs.add()
                blob.shape.dim.extend(shape)
                scale = 1.0 / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else 1.0)
                blob.data.extend((rng.standard_normal(shape) * scale).astype(np.float32).ravel().tolist())
        for top in layer.top:
            channels[top] = _out_channels(layer, cins)
    return weights


def _mults(layer: caffe_pb2.LayerParameter) -> str:
    return ",".join(f"{p.lr_mult:g}/{p.decay_mult:g}" if p.HasField("decay_mult") else f"{p.lr_mult:g}"
                    for p in layer.param)


def summary(layer: caffe_pb2.LayerParameter) -> str:
    """One line per layer: name type bottoms>tops and the options that define it, as the
    reference prototxts spell them (an option the reference leaves out shows as absent)."""
    words = [layer.name, layer.type, f"{','.join(layer.bottom) or '-'}>{','.join(layer.top)}"]
    t = layer.type
    if t in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        words.append(f"out={p.num_output}")
        words += [f"pad={p.pad[0]}"] if p.pad else []
        words.append(f"k={p.kernel_size[0]}")
        words += [f"s={p.stride[0]}"] if p.stride else []
        words += [f"g={p.group}"] if p.HasField("group") else []
        words += ["nobias"] if p.HasField("bias_term") and not p.bias_term else []
    elif t == "Pooling":
        p = layer.pooling_param
        words.append(f"{caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)} k={p.kernel_size} s={p.stride}")
    elif t == "LRN":
        p = layer.lrn_param
        words.append(f"n={p.local_size} alpha={p.alpha:g} beta={p.beta:g}")
    elif t == "Dropout":
        words.append(f"ratio={layer.dropout_param.dropout_ratio:g}")
    elif t == "Crop":
        words.append(f"axis={layer.crop_param.axis} offset={','.join(map(str, layer.crop_param.offset))}")
    elif t == "Eltwise":
        p = layer.eltwise_param
        words.append(caffe_pb2.EltwiseParameter.EltwiseOp.Name(p.operation))
        words += [f"coeff={','.join(f'{c:g}' for c in p.coeff)}"] if p.coeff else []
    elif t == "Scale":
        f = layer.scale_param.filler
        words.append(f"{f.type}={f.value:g}")
    elif t == "Python":
        words.append(f"layer={layer.python_param.layer}")
    elif t == "Input":
        words += ["shape=" + "x".join(map(str, s.dim)) for s in layer.input_param.shape]
    elif t == "SoftmaxWithLoss":
        p = layer.loss_param
        words.append(f"normalize={str(p.normalize).lower()} ignore={p.ignore_label}")
    if layer.param:
        words.append(f"lr={_mults(layer)}")
    return " ".join(words)
