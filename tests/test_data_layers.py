"""The Caffe Python layers driven through setup/reshape/forward with pycaffe's blob vectors
(the engine's RawBlobVec of Blob views: indexable, not iterable)."""
import random

import numpy as np
import pytest

from data_helpers import blob_vector, rgb_image, write_index_png, write_lines, write_rgb
from netgen.errors import FcnkitError
from solvers.data import layers as L
from solvers.data.augment import IMAGE, LABEL, Augment
from solvers.engine.pylayer import make_layer


def make_voc(root, sizes):
    """One item per (h, w); label of item k is filled with k."""
    names = [f"2011_{k:06d}" for k in range(len(sizes))]
    for k, (name, (h, w)) in enumerate(zip(names, sizes)):
        write_rgb(root / "JPEGImages" / f"{name}.jpg", rgb_image(h, w, k))
        lab = np.full((h, w), k, np.uint8)
        lab[0, 0] = 255
        write_index_png(root / "SegmentationClass" / f"{name}.png", lab)
    for split in ("train", "seg11valid"):
        write_lines(root / "ImageSets" / "Segmentation" / f"{split}.txt", names)
    return names


def run(layer, steps):
    """Labels' fill values seen over `steps` forwards (one per item in the batch)."""
    top = blob_vector(2)
    layer.setup(blob_vector(0), top)
    seen = []
    for _ in range(steps):
        layer.reshape(blob_vector(0), top)
        layer.reshape(blob_vector(0), top)  # Caffe reshapes again inside Forward: must not skip items
        layer.forward(blob_vector(0), top)
        assert top[0].data.dtype == np.float32 and top[0].data.shape[1] == 3
        assert top[1].data.shape[1] == 1 and top[0].data.shape[2:] == top[1].data.shape[2:]
        seen += [int(top[1].data[n, 0, 1, 1]) for n in range(top[1].data.shape[0])]
    return seen, top


def new_layer(cls, **params):
    layer = make_layer(cls, cls.__name__)
    layer.param_str = repr(params)
    return layer


def test_sequential_order_wraps(tmp_path):
    make_voc(tmp_path, [(6, 8)] * 3)
    layer = new_layer(L.VOCSegDataLayer, voc_dir=str(tmp_path), split="seg11valid", seed=1337,
                      mean=(104.00699, 116.66877, 122.67892))
    seen, top = run(layer, 7)
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    assert top[1].data[0, 0, 0, 0] == 255 and top[1].data.shape == (1, 1, 6, 8)


def test_random_order_is_the_reference_sequence(tmp_path):
    make_voc(tmp_path, [(6, 8)] * 5)
    seen, _ = run(new_layer(L.VOCSegDataLayer, voc_dir=str(tmp_path), split="train",
                            seed=1337), 12)
    ref = random.Random(1337)  # reference: random.seed(seed) then randint(0, n-1) per item
    assert seen == [ref.randint(0, 4) for _ in range(12)]
    again, _ = run(new_layer(L.VOCSegDataLayer, voc_dir=str(tmp_path), split="train",
                             seed=1337), 12)
    assert again == seen
    fixed, _ = run(new_layer(L.VOCSegDataLayer, voc_dir=str(tmp_path), split="train",
                             seed=1337, randomize=False), 6)
    assert fixed == [0, 1, 2, 3, 4, 0]


def test_batches_with_crop_stack(tmp_path):
    make_voc(tmp_path, [(6, 8), (9, 5), (7, 7)])
    layer = new_layer(L.VOCSegDataLayer, voc_dir=str(tmp_path), split="seg11valid",
                      batch_size=2, crop_size=(6, 6), mirror=True, scale=(0.8, 1.25), seed=3)
    top = blob_vector(2)
    layer.setup(blob_vector(0), top)
    layer.reshape(blob_vector(0), top)
    layer.forward(blob_vector(0), top)
    assert top[0].data.shape == (2, 3, 6, 6) and top[1].data.shape == (2, 1, 6, 6)
    labels = top[1].data
    assert set(np.unique(labels[0])) <= {0, 255} and set(np.unique(labels[1])) <= {1, 255}


def test_batch_of_unequal_sizes_needs_crop(tmp_path):
    make_voc(tmp_path, [(6, 8), (9, 5)])
    layer = new_layer(L.VOCSegDataLayer, voc_dir=str(tmp_path), split="seg11valid",
                      batch_size=2)
    top = blob_vector(2)
    layer.setup(blob_vector(0), top)
    with pytest.raises(FcnkitError, match="batch_size 2 needs equal-size items.*crop_size"):
        layer.reshape(blob_vector(0), top)


def test_top_and_bottom_counts(tmp_path):
    make_voc(tmp_path, [(6, 8)])
    layer = new_layer(L.VOCSegDataLayer, voc_dir=str(tmp_path), split="train")
    with pytest.raises(FcnkitError, match=r"needs 2 tops \(data, label\), got 3"):
        layer.setup(blob_vector(0), blob_vector(3))
    with pytest.raises(FcnkitError, match="takes no bottom"):
        layer.setup(blob_vector(1), blob_vector(2))


def test_registry_and_lookup():
    for ref, name in (("voc_layers", "VOCSegDataLayer"), ("voc_layers", "SBDDSegDataLayer"),
                      ("siftflow_layers", "SIFTFlowSegDataLayer"),
                      ("nyud_layers", "NYUDSegDataLayer"),
                      ("pascalcontext_layers", "PASCALContextSegDataLayer")):
        assert L.DATA_LAYERS[f"{ref}.{name}"] is getattr(L, name)
        assert L.DATA_LAYERS[f"solvers.data.layers.{name}"] is getattr(L, name)
    for name in ("CityscapesSegDataLayer", "KITTIRoadSegDataLayer", "ADE20KSegDataLayer",
                 "SYNTHIASegDataLayer", "SyntheticSegDataLayer"):
        assert L.DATA_LAYERS[f"solvers.data.layers.{name}"].__name__ == name
    with pytest.raises(FcnkitError, match="module 'voc_layers' layer 'Nope' is not a known"):
        L.dataset_from_layer("voc_layers", "Nope", "{}")


def test_base_dir_resolves_relative_paths(tmp_path):
    make_voc(tmp_path / "data" / "VOC2011", [(6, 8)])
    ds = L.dataset_from_layer("voc_layers", "VOCSegDataLayer",
                              "{'voc_dir': 'data/VOC2011', 'split': 'train'}",
                              base_dir=tmp_path)
    assert len(ds) == 1


def test_synthetic_layer_forward():
    layer = new_layer(L.SyntheticSegDataLayer, n_classes=3, size=(16, 20), length=4,
                      batch_size=2, seed=0)
    seen, top = run(layer, 2)
    assert top[0].data.shape == (2, 3, 16, 20)
    assert set(np.unique(top[1].data)) <= {0, 1, 2, 3, 255}
    assert layer.dataset.n_classes == 4


def test_augmentation_is_seeded_and_consistent(tmp_path):
    make_voc(tmp_path, [(6, 8)])
    params = dict(voc_dir=str(tmp_path), split="train", mirror=True, seed=5)
    ds_a = L.dataset_from_layer("voc_layers", "VOCSegDataLayer", repr(params))
    ds_b = L.dataset_from_layer("voc_layers", "VOCSegDataLayer", repr(params))
    plain = ds_a.load(0)
    flips = 0
    for _ in range(8):
        a, b = ds_a[0], ds_b[0]
        np.testing.assert_array_equal(a["data"], b["data"])
        flipped = not np.array_equal(a["data"], plain["data"])
        if flipped:
            flips += 1
            np.testing.assert_array_equal(a["data"], plain["data"][:, :, ::-1])
            np.testing.assert_array_equal(a["label"], plain["label"][:, :, ::-1])
        else:
            np.testing.assert_array_equal(a["label"], plain["label"])
    assert 0 < flips < 8


def test_crop_pads_with_mean_and_void():
    data = np.ones((3, 4, 5), np.float32)
    label = np.arange(20, dtype=np.uint8).reshape(1, 4, 5)
    out = Augment(crop=(6, 7), seed=0)({"data": data, "label": label},
                                       {"data": IMAGE, "label": LABEL})
    assert out["data"].shape == (3, 6, 7) and out["label"].shape == (1, 6, 7)
    np.testing.assert_array_equal(out["label"][:, :4, :5], label)
    assert (out["label"][:, 4:] == 255).all() and (out["label"][:, :, 5:] == 255).all()
    assert (out["data"][:, 4:] == 0).all() and (out["data"][:, :4, :5] == 1).all()


def test_scale_keeps_label_values():
    label = np.repeat(np.repeat(np.array([[0, 3], [7, 255]], np.uint8), 3, 0), 3, 1)[None]
    data = np.random.default_rng(0).normal(size=(3, 6, 6)).astype(np.float32)
    out = Augment(scale=(1.5, 1.5), seed=0)({"data": data, "label": label},
                                            {"data": IMAGE, "label": LABEL})
    assert out["data"].shape == (3, 9, 9) and out["label"].shape == (1, 9, 9)
    assert set(np.unique(out["label"])) == {0, 3, 7, 255}


@pytest.mark.parametrize("loaded", [True, False])
def test_skip_batches_lands_where_forwards_would(tmp_path, loaded):
    """skip_batches(n) leaves order and augmentation where n forwards leave them, whether or
    not a batch is already loaded (the net's shape pass loads one before training)."""
    make_voc(tmp_path, [(6, 8)] * 5)
    params = dict(voc_dir=str(tmp_path), split="train", seed=3, mirror=True, scale=(0.5, 1.5),
                  crop_size=(5, 7), batch_size=2)
    straight, skipped = (new_layer(L.VOCSegDataLayer, **params) for _ in range(2))
    top_a, top_b = blob_vector(2), blob_vector(2)
    straight.setup(blob_vector(0), top_a)
    skipped.setup(blob_vector(0), top_b)
    for _ in range(3):
        straight.reshape(blob_vector(0), top_a)
        straight.forward(blob_vector(0), top_a)
    if loaded:
        skipped.reshape(blob_vector(0), top_b)
    skipped.skip_batches(3)
    for _ in range(4):
        for layer, top in ((straight, top_a), (skipped, top_b)):
            layer.reshape(blob_vector(0), top)
            layer.forward(blob_vector(0), top)
        for i in range(len(top_a)):   # pycaffe's top vectors index, they do not iterate
            np.testing.assert_array_equal(top_a[i].data, top_b[i].data)


def test_augmentation_draws_can_be_skipped():
    data = np.random.default_rng(1).normal(size=(3, 9, 11)).astype(np.float32)
    label = np.arange(99, dtype=np.uint8).reshape(1, 9, 11)
    kinds = {"data": IMAGE, "label": LABEL}
    a, b = (Augment(True, (0.7, 1.3), (5, 6), seed=4) for _ in range(2))
    draws = [a({"data": data, "label": label}, kinds) for _ in range(6)]
    b.skip(4)
    for want in draws[4:]:
        got = b({"data": data, "label": label}, kinds)
        for k in kinds:
            np.testing.assert_array_equal(got[k], want[k])
    assert any(not np.array_equal(d["label"], draws[0]["label"]) for d in draws[1:])
