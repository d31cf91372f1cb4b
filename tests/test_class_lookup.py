"""Legend names from the model folder: infer.py without --classes names the classes of the
dataset netgen generated the net for."""
from __future__ import annotations

from pathlib import Path

import pytest

import infer
from netgen.presets import DATASETS, resolve
from netgen.writer import generate, render
from solvers.data.classes import (DATASET_CLASS_LISTS, SYNTHETIC, VOC, class_names,
                                  model_class_names)

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_dataset_preset_names_its_classes(dataset, tmp_path):
    """Each preset's heads find a class list of their size through the generated header."""
    net = "fcn32s-color" if dataset == "nyud" else "fcn32s"
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(render(resolve(f"{dataset}-{net}"))["deploy.prototxt"])
    for head in DATASETS[dataset].heads:
        names = model_class_names(deploy, head.num_classes)
        assert names is not None and len(names) == head.num_classes
        assert names in {class_names(k) for k in DATASET_CLASS_LISTS[dataset]} | {
            SYNTHETIC[:head.num_classes]}


def test_infer_takes_names_from_the_model_folder(tmp_path):
    voc = MODELS / "voc-fcn8s" / "deploy.prototxt"
    assert infer.class_list(None, 21, voc) == list(VOC)
    demo = generate("synthetic-fcn8s", tmp_path, 6, 1 / 16) / "deploy.prototxt"
    assert infer.class_list(None, 6, demo) == list(SYNTHETIC[:6])
    assert infer.class_list(None, 4, demo)[-1] == "triangle"  # synthetic: cut to the count
    assert infer.class_list("voc", 21, demo) == list(VOC)  # --classes wins
    # a class count the dataset's list does not have, or a net netgen did not write: numbers
    assert infer.class_list(None, 5, voc) is None
    plain = tmp_path / "plain.prototxt"
    plain.write_text(voc.read_text().split("\n", 1)[1])  # header line removed
    assert infer.class_list(None, 21, plain) == list(VOC)  # the old voc-for-21 default
    assert infer.class_list(None, 6, plain) is None
    assert model_class_names(tmp_path / "missing.prototxt", 21) is None
