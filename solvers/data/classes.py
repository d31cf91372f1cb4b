"""Class names and label-id tables of the supported datasets, kept as data in one place.

Names are in model output order (index = train id). Tables map a dataset's raw label ids to
those train ids; anything not in a table is void (255).
"""
from __future__ import annotations

import os
import re

from netgen.errors import FcnkitError

VOID = 255

VOC = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

# PASCAL-Context 59-class task plus background (index 0); FCN's classes-59.txt order.
PASCAL_CONTEXT = VOC + (
    "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "clothes", "computer",
    "cup", "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard", "light",
    "mountain", "mouse", "curtain", "platform", "sign", "plate", "road", "rock", "shelves",
    "sidewalk", "sky", "snow", "bedcloth", "track", "tree", "truck", "wall", "water", "window",
    "wood",
)

# The 59-label list names three classes differently from the 400/459-label list.
PASCAL_CONTEXT_RENAMES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}

SIFTFLOW = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase",
    "streetlight", "sun", "tree", "window",
)
SIFTFLOW_GEO = ("sky", "horizontal", "vertical")

NYUD40 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)

CITYSCAPES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# Official Cityscapes labelId -> trainId (labels.py of cityscapesScripts); others are void.
CITYSCAPES_ID_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

KITTI_ROAD = ("not road", "road")

ADE20K = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

# SYNTHIA (RAND-CITYSCAPES) class ids -> Cityscapes' 19 train ids, the usual SYNTHIA->Cityscapes
# protocol. Ids 0 void, 13 parking-slot, 14 road-work, 22 lanemarking have no counterpart.
SYNTHIA_ID_TO_CITYSCAPES19 = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
    8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}
# The 16-class protocol drops terrain, truck and train (absent or rare in SYNTHIA).
SYNTHIA16 = tuple(c for c in CITYSCAPES if c not in ("terrain", "truck", "train"))
SYNTHIA_ID_TO_16 = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12,
    19: 13, 12: 14, 11: 15,
}

SYNTHETIC = ("background", "circle", "rectangle", "triangle", "stripe", "ring", "ellipse",
             "diamond", "cross")

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "voc": VOC,
    "pascal-context": PASCAL_CONTEXT,
    "siftflow": SIFTFLOW,
    "siftflow-geo": SIFTFLOW_GEO,
    "nyud": NYUD40,
    "cityscapes": CITYSCAPES,
    "kitti-road": KITTI_ROAD,
    "ade20k": ADE20K,
    "synthia": CITYSCAPES,
    "synthia16": SYNTHIA16,
    "synthetic": SYNTHETIC[:6],
}


def class_names(key: str, n_classes: int | None = None) -> tuple[str, ...]:
    """Names for a dataset key; `n_classes` (if given) must match the list's length.

    "synthetic" is the one open-ended list: it is cut to `n_classes`.
    """
    if key not in CLASS_NAMES:
        raise FcnkitError(f"unknown class list '{key}' (known: {', '.join(CLASS_NAMES)})")
    names = SYNTHETIC if key == "synthetic" else CLASS_NAMES[key]
    if n_classes is None:
        return CLASS_NAMES[key]
    if key == "synthetic" and 2 <= n_classes <= len(SYNTHETIC):
        return SYNTHETIC[:n_classes]
    if len(names) != n_classes:
        raise FcnkitError(f"class list '{key}' has {len(names)} names, not {n_classes}")
    return names


# netgen's dataset presets (netgen.presets.DATASETS) -> the class lists their heads use; a
# dataset with several lists (two heads, or a class-count choice) is matched by class count.
DATASET_CLASS_LISTS: dict[str, tuple[str, ...]] = {
    "voc": ("voc",), "pascalcontext": ("pascal-context",), "siftflow": ("siftflow", "siftflow-geo"),
    "nyud": ("nyud",), "ade20k": ("ade20k",), "cityscapes": ("cityscapes",),
    "kitti-road": ("kitti-road",), "synthia": ("synthia", "synthia16"), "synthetic": ("synthetic",),
}
# the first line netgen writes into every generated file (netgen.writer.header)
_GENERATED = re.compile(r"^# generated by fcnkit netgen (\S+)")


def model_class_names(prototxt: str | os.PathLike, n_classes: int) -> tuple[str, ...] | None:
    """Class names for a net netgen generated, from its header's model name (<dataset>-<net>)
    and that dataset preset's class list of `n_classes` names; None for a net netgen did not
    write, an unknown dataset or a class count no list has (e.g. --classes 5 on voc)."""
    from netgen.presets import resolve

    try:
        with open(prototxt, encoding="utf-8", errors="replace") as f:
            found = _GENERATED.match(f.readline())
        dataset = resolve(found[1]).dataset.name if found else None
    except (OSError, FcnkitError):
        return None
    for key in DATASET_CLASS_LISTS.get(dataset, ()):
        try:
            return class_names(key, n_classes)
        except FcnkitError:
            continue
    return None
