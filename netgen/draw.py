"""A picture of a net: layers as boxes with type, window and output size, crop offsets on the
edges into Crop layers — Caffe's draw_net.py, with the geometry netgen already computes.

    python -m netgen draw models/voc-fcn8s/deploy.prototxt fcn8s.svg --size 500x500

The graph is built as DOT text (graphviz, the Python binding) and rendered by graphviz's
`dot` program for .svg/.png/.pdf; .dot writes the DOT text itself and needs no `dot`.
Shapes come from netgen.shapes (Caffe's output-size rules), windows from the coordinate-map
rules (netgen.coord_map.RULES, as `explain` prints them), and each Crop edge shows the offset
the prototxt gives Caffe, checked against the offset netgen's coordinate map derives.
"""
from __future__ import annotations

import os
from pathlib import Path

from .coord_map import BlobGraph, crop_offsets
from .errors import FcnkitError
from .explain import _declared, _input_blob, _shape, _sizes, _window_columns
from .fileio import atomic_write
from .proto import caffe_pb2
from .shapes import USER_SIZED, filter_phase, layer_shapes

FORMATS = ("svg", "png", "pdf", "dot")
NEWLINE = "\\n"  # DOT's line break inside a label (escString), kept as two characters
INSTALL_DOT = ("graphviz's `dot` program is not installed; install it (Debian/Ubuntu: "
               "apt-get install graphviz, macOS: brew install graphviz) or write a .dot file")

# fill colour by layer type; the rest are white
COLOURS = {
    "Convolution": "#cfe2f3", "Deconvolution": "#d9ead3", "Pooling": "#fce5cd",
    "Crop": "#d9d2e9", "Eltwise": "#fff2cc", "Concat": "#fff2cc", "InnerProduct": "#cfe2f3",
    "SoftmaxWithLoss": "#f4cccc", "Accuracy": "#f4cccc", "Input": "#eeeeee",
    "Python": "#eeeeee", "Data": "#eeeeee",
}


def _in_place(layer: caffe_pb2.LayerParameter) -> bool:
    return len(layer.bottom) == 1 and list(layer.top) == list(layer.bottom)


def _node_label(layer: caffe_pb2.LayerParameter, tops: list) -> list[str]:
    kernel, stride, pad, dilation = _window_columns(layer)
    window = "global" if kernel == "global" else " ".join(
        f"{name}{value}" for name, value in (("k", kernel), ("s", stride), ("p", pad),
                                             ("d", dilation))
        if value and not (name == "p" and value == "0") and not (name == "d" and value == "1"))
    lines = [layer.name, layer.type] + ([window] if window else [])
    return lines + [_shape(t) for t in tops]


def _crop_label(layer: caffe_pb2.LayerParameter, graph: BlobGraph, i: int) -> str:
    """The offset Caffe applies (crop_param), with the coordinate map's when they differ."""
    given = list(layer.crop_param.offset) or [0]
    axis = layer.crop_param.axis if layer.crop_param.HasField("axis") else 2
    text = f"crop {','.join(map(str, given))}" + (f" (axis {axis})" if axis != 2 else "")
    cropped, reference = graph.bottoms[i][:2]
    try:
        derived_axis, derived = crop_offsets(graph.between(cropped, reference), layer.name)
    except FcnkitError:  # pycaffe's AssertionError for a crop it cannot derive is one too
        return text + NEWLINE + "(coord map: no offset)"
    same = derived_axis == axis and (derived == given or (len(given) == 1 and
                                                          set(derived) == set(given)))
    return text if same else text + NEWLINE + f"(coord map: {','.join(map(str, derived))})"


def to_dot(net: caffe_pb2.NetParameter, size: tuple[int, int] | None = None,
           phase: str = "TEST", rankdir: str = "TB"):
    """The net as a graphviz.Digraph: a node per layer (name, type, kernel/stride/pad/dilation,
    top shapes for an H x W input, or the net's declared input shapes when size is None), an
    edge per bottom from the layer that last wrote it (blob name on the edge when it differs
    from that layer's name), in-place layers (ReLU, Dropout) as a "+ Type" line in the box of
    the layer they modify, legacy `input` blobs as ellipses, Crop edges labelled with the
    crop offsets. Raises FcnkitError for a net whose shapes or blobs do not work out."""
    import graphviz

    net = filter_phase(net, phase)
    if size is not None:
        shapes = layer_shapes(net, _sizes(net, _input_blob(net), size))
    else:
        undeclared = [t for layer in net.layer if layer.type in USER_SIZED for t in layer.top]
        undeclared += [t for t, shape in _declared(net).items() if shape is None]
        if undeclared:  # data layers: only the caller knows the image size
            raise FcnkitError(f"the net declares no input shape; give one with --size HxW "
                              f"({undeclared[0]!r} comes from a data layer)")
        shapes = layer_shapes(net)
    graph = BlobGraph(net)
    dot = graphviz.Digraph(net.name or "net", graph_attr={"rankdir": rankdir, "fontsize": "10",
                                                          "label": net.name, "labelloc": "t"},
                           node_attr={"shape": "box", "style": "rounded,filled",
                                      "fontname": "Helvetica", "fontsize": "10"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    for k, name in enumerate(net.input):
        dot.node(f"input{k}", name, shape="ellipse", fillcolor="#eeeeee")
    node: dict[int, int] = {}  # layer -> the layer whose box shows it
    labels: dict[int, list[str]] = {}
    edges = []
    for i, ls in enumerate(shapes):
        layer, bottoms = ls.layer, graph.bottoms[i]
        if _in_place(layer) and bottoms[0][0] >= 0:  # ReLU, Dropout on a layer: one box
            node[i] = node[bottoms[0][0]]
            labels[node[i]].insert(-len(ls.tops), f"+ {layer.type}")
            continue
        node[i] = i
        labels[i] = _node_label(layer, ls.tops)
        for slot, (src, top) in enumerate(bottoms):
            blob = graph.names[(src, top)]
            tail = f"input{top}" if src < 0 else f"layer{node[src]}"
            label = "" if src < 0 or blob == graph.layers[node[src]].name else blob
            if layer.type == "Crop" and slot == 0:
                label = NEWLINE.join(filter(None, (label, _crop_label(layer, graph, i))))
                edges.append((tail, f"layer{i}", dict(label=label, color="#674ea7",
                                                      fontcolor="#674ea7", penwidth="2")))
            else:
                edges.append((tail, f"layer{i}", dict(
                    label=label, style="dashed" if layer.type == "Crop" else "solid")))
    for i, lines in labels.items():
        dot.node(f"layer{i}", NEWLINE.join(lines),
                 fillcolor=COLOURS.get(graph.layers[i].type, "white"))
    for tail, head, attrs in edges:
        dot.edge(tail, head, **attrs)
    return dot


def draw(net: caffe_pb2.NetParameter, out: str | os.PathLike,
         size: tuple[int, int] | None = None, phase: str = "TEST", rankdir: str = "TB") -> Path:
    """Write the picture of `net` to `out` (.svg, .png, .pdf, or .dot for the DOT text),
    atomically. Raises FcnkitError for another suffix or when graphviz's `dot` is missing."""
    import graphviz

    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise FcnkitError(f"{out}: write .{', .'.join(FORMATS)} (the suffix picks the format)")
    dot = to_dot(net, size, phase, rankdir)
    if fmt == "dot":
        data = dot.source.encode("utf-8")
    else:
        try:
            data = dot.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            raise FcnkitError(INSTALL_DOT) from None
        except graphviz.CalledProcessError as e:
            raise FcnkitError(f"dot failed on {out.name}: "
                              f"{(e.stderr or b'').decode(errors='replace').strip()}") from None
    with atomic_write(out, "wb") as f:
        f.write(data)
    return out
