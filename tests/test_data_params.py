"""param_str parsing: literals and JSON only, never code; keys validated per layer."""
import pytest

from netgen.errors import FcnkitError
from solvers.data import params as P
from solvers.data.layers import DATA_LAYERS, dataset_from_layer

# param_str values exactly as the FCN reference prototxts write them
REFERENCE = {
    "VOCSegDataLayer": "{'voc_dir': '../data/pascal/VOC2011', 'seed': 1337, "
                       "'split': 'seg11valid', 'mean': (104.00699, 116.66877, 122.67892)}",
    "SBDDSegDataLayer": "{'sbdd_dir': '../data/sbdd/dataset', 'seed': 1337, 'split': 'train', "
                        "'mean': (104.00699, 116.66877, 122.67892)}",
    "SIFTFlowSegDataLayer": "{'siftflow_dir': '../../data/sift-flow', 'seed': 1337, "
                            "'split': 'trainval'}",
    "NYUDSegDataLayer": "{'tops': ['color', 'hha', 'label'], 'seed': 1337, "
                        "'nyud_dir': '../../data/nyud', 'split': 'trainval'}",
    "PASCALContextSegDataLayer": "{'context_dir': '../../data/pascal-context', 'seed': 1337, "
                                 "'split': 'train', 'voc_dir': '../../data/pascal'}",
}


def test_python_literal_and_json():
    text = "{'voc_dir': '../data/pascal/VOC2011', 'split': 'train', 'seed': 1337}"
    assert P.parse_param_str(text, "L") == {"voc_dir": "../data/pascal/VOC2011",
                                            "split": "train", "seed": 1337}
    assert P.parse_param_str('{"randomize": false, "seed": null, "mean": [1, 2, 3]}', "L") == {
        "randomize": False, "seed": None, "mean": [1, 2, 3]}
    assert P.parse_param_str("", "L") == {}
    assert P.parse_param_str(None, "L") == {}


@pytest.mark.parametrize("text", [
    "__import__('os').system('x')",
    "{'a': __import__('os').system('x')}",
    "dict(voc_dir='x')",
    "{'a': open('/etc/passwd').read()}",
    "lambda: 1",
    "{'a': 1",
])
def test_code_is_refused(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FcnkitError, match="VOCSegDataLayer: param_str is not a Python or JSON"):
        P.parse_param_str(text, "VOCSegDataLayer")


@pytest.mark.parametrize("text, why", [("[1, 2]", "must be a dict, got list"),
                                       ("{1: 'a'}", "keys must be strings")])
def test_non_dict_refused(text, why):
    with pytest.raises(FcnkitError, match=why):
        P.parse_param_str(text, "L")


SPEC = {"voc_dir": P.Param(P.string), "seed": P.Param(P.seed, None),
        "mean": P.Param(P.optional(P.mean), None), "crop_size": P.Param(P.optional(P.size), None),
        "scale": P.Param(P.scale, None), "randomize": P.Param(P.flag, True)}


def test_validate_fills_defaults_and_normalises():
    out = P.validate({"voc_dir": "d", "crop_size": 5, "scale": [0.5, 2], "mean": [1, 2, 3]},
                     SPEC, "L")
    assert out == {"voc_dir": "d", "seed": None, "mean": (1.0, 2.0, 3.0), "crop_size": (5, 5),
                   "scale": (0.5, 2.0), "randomize": True}


@pytest.mark.parametrize("raw, msg", [
    ({"voc_dir": "d", "vocdir": "x"}, "L: param_str has unknown key 'vocdir'"),
    ({}, "L: param_str lacks required key 'voc_dir'"),
    ({"voc_dir": ""}, "key 'voc_dir' = '': expected a non-empty string"),
    ({"voc_dir": "d", "seed": -1}, "key 'seed'"),
    ({"voc_dir": "d", "seed": True}, "key 'seed'"),
    ({"voc_dir": "d", "mean": (1, 2)}, "key 'mean'.*expected 3 numbers"),
    ({"voc_dir": "d", "mean": (1, 2, float("nan"))}, "key 'mean'"),
    ({"voc_dir": "d", "crop_size": (0, 4)}, "key 'crop_size'"),
    ({"voc_dir": "d", "scale": (2, 1)}, "key 'scale'.*low <= high"),
    ({"voc_dir": "d", "randomize": "yes"}, "key 'randomize'"),
])
def test_validate_errors(raw, msg):
    with pytest.raises(FcnkitError, match=msg):
        P.validate(raw, SPEC, "L")


@pytest.mark.parametrize("layer", sorted(REFERENCE))
def test_reference_param_strs_validate(layer):
    cls = DATA_LAYERS[f"solvers.data.layers.{layer}"]
    parsed = P.parse_param_str(REFERENCE[layer], layer)
    out = P.validate(parsed, cls.DATASET.spec(), layer)
    assert out["seed"] == 1337 and out["randomize"] is True and out["batch_size"] == 1


def test_layer_errors_name_the_layer(tmp_path):
    with pytest.raises(FcnkitError, match=r"layer 'data' \(VOCSegDataLayer\): param_str has "
                                          r"unknown key 'bogus'"):
        dataset_from_layer("voc_layers", "VOCSegDataLayer",
                           "{'voc_dir': 'x', 'split': 'train', 'bogus': 1}", name="data")
    with pytest.raises(FcnkitError, match="NYUDSegDataLayer: param_str key 'tops'"):
        dataset_from_layer("nyud_layers", "NYUDSegDataLayer",
                           "{'nyud_dir': 'x', 'split': 'train', 'tops': ['color', 'rgb']}")
    with pytest.raises(FcnkitError, match=r"NYUDSegDataLayer: param_str has unknown key 'mean'"):
        dataset_from_layer("nyud_layers", "NYUDSegDataLayer",
                           "{'nyud_dir': 'x', 'split': 'train', 'tops': ['color'], "
                           "'mean': (1, 2, 3)}")
