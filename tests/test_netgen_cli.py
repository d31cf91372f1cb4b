"""`python -m netgen` as a user runs it: subprocesses, exit codes, one-line errors, no leftovers."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netgen.cli import main
from netgen.presets import DEFAULT_SET, NETS, RECIPES

REPO = Path(__file__).resolve().parents[1]


def netgen(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "netgen", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*")) if path.exists() else []


def test_generate_writes_the_four_files(tmp_path):
    r = netgen("generate", "voc-fcn16s", "--out", tmp_path, "--width", "0.125", "--classes", "5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {tmp_path / 'voc-fcn16s'}"
    assert sorted(p.name for p in (tmp_path / "voc-fcn16s").iterdir()) == [
        "deploy.prototxt", "solver.prototxt", "train.prototxt", "val.prototxt"]


def test_generate_with_input_data_and_another_dataset(tmp_path):
    assert main(["generate", "voc-fcn8s", "--dataset", "synthetic", "--data", "input",
                 "--out", str(tmp_path)]) == 0
    text = (tmp_path / "synthetic-fcn8s" / "train.prototxt").read_text(encoding="utf-8")
    assert 'type: "Input"' in text and "Python" not in text
    assert "# options: python -m netgen generate synthetic-fcn8s --data input" in text


def test_no_arguments_writes_the_default_set(tmp_path):
    assert main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DEFAULT_SET)


@pytest.mark.parametrize("args, fragments", [
    (["--classes", "0"], ["--classes must be an integer >= 2", "not 0"]),
    (["--classes", "-2"], ["--classes must be an integer >= 2"]),
    (["--classes", "1"], ["--classes must be an integer >= 2", "not 1"]),
    (["--classes", "many"], ["argument --classes: invalid int value: 'many'"]),
    (["--width", "0"], ["--width must be a positive number, not 0.0"]),
    (["--width", "-0.5"], ["--width must be a positive number"]),
    (["--width", "nan"], ["--width must be a positive number"]),
    (["--dataset", "mnist"], ["argument --dataset: invalid choice: 'mnist'"]),
    (["--data", "lmdb"], ["argument --data: invalid choice: 'lmdb'"]),
    (["--recipe", "fast"], ["argument --recipe: invalid choice: 'fast'", "'scratch'"]),
    (["--input-scale", "0"], ["--input-scale must be a positive number"]),
    (["--input-size", "0x5"], ["argument --input-size", "expected HxW"]),
    (["--solver", "max_iter"], ["argument --solver: expected KEY=VALUE"]),
    (["--solver", "max_iters=5"], ["--solver: SolverParameter has no option 'max_iters'"]),
    (["--solver", "lr_policy=5"], ["--solver.lr_policy: bad value 5"]),
    (["--train-param", "=1"], ["argument --train-param: expected KEY=VALUE"]),
    (["--voc-dir", "d", "--data", "input"], ["not with --data input"]),
    (["--dataset", "siftflow", "--voc-dir", "d"], ["--voc-dir: siftflow-fcn8s reads several"]),
])
def test_bad_generate_options(tmp_path, args, fragments):
    assert_user_error(netgen("generate", "voc-fcn8s", "--out", tmp_path / "out", *args), *fragments)
    assert files_under(tmp_path) == []


def test_unknown_model(tmp_path):
    r = netgen("generate", "voc-fcn4s", "--out", tmp_path)
    assert_user_error(r, "unknown model 'voc-fcn4s'", "python -m netgen list")
    assert files_under(tmp_path) == []


def test_unknown_command():
    assert_user_error(netgen("frobnicate"), "invalid choice: 'frobnicate'")


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = netgen("generate", "voc-fcn8s", "--out", blocker / "models")
    assert_user_error(r, str(blocker / "models" / "voc-fcn8s"), "cannot create folder")
    assert files_under(tmp_path) == [blocker]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_output_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_user_error(netgen("generate", "voc-fcn8s", "--out", ro), str(ro / "voc-fcn8s"))
        assert files_under(ro) == []
    finally:
        ro.chmod(0o755)


def test_default_set_into_unwritable_folder_writes_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_user_error(netgen("--out", blocker / "x"), "cannot create folder")
    assert files_under(tmp_path) == [blocker]


def test_list_names_models_nets_and_datasets():
    r = netgen("list")
    assert r.returncode == 0, r.stderr
    for word in (*DEFAULT_SET, *NETS, "pascalcontext", "cityscapes", "kitti-road", "synthia"):
        assert word in r.stdout
    assert "* voc-fcn8s-atonce" in r.stdout
    recipes = r.stdout.split("recipes (--recipe):")[1].splitlines()[1:]
    assert [line.split()[0] for line in recipes] == list(RECIPES)


def test_generate_with_the_scratch_recipe(tmp_path):
    r = netgen("generate", "synthetic-fcn32s", "--recipe", "scratch", "--width", "0.0625",
               "--voc-dir", "../../data", "--input-size", "128x128", "--train-param", "seed=0",
               "--solver", "max_iter=1500", "--solver", "snapshot=1500", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "synthetic-fcn32s"
    train = (folder / "train.prototxt").read_text(encoding="utf-8")
    assert "# options: python -m netgen generate synthetic-fcn32s --width 0.0625 --recipe " \
           "scratch --input-size 128x128 --voc-dir ../../data --train-param seed=0 --solver " \
           "max_iter=1500 --solver snapshot=1500\n" in train
    for fragment in ('name: "data_scale"', 'bottom: "data_scaled"', 'type: "msra"',
                     "normalization: VALID", 'layer: "VOCSegDataLayer"', r"\'seed\': 0"):
        assert fragment in train
    assert "Dropout" not in train
    assert "dim: 128" in (folder / "deploy.prototxt").read_text(encoding="utf-8")
    solver = (folder / "solver.prototxt").read_text(encoding="utf-8")
    for fragment in ('type: "Adam"', "base_lr: 0.001", "max_iter: 1500", "snapshot: 1500"):
        assert fragment in solver


def test_help_describes_every_command():
    r = netgen("--help")
    assert r.returncode == 0
    for word in ("generate", "list", "explain", "models/"):
        assert word in r.stdout
    r = netgen("generate", "--help")
    for word in ("--classes", "--dataset", "--width", "--out", "--data", "voc-fcn8s",
                 "--recipe", "--voc-dir", "--solver", "--train-param", "--input-size"):
        assert word in r.stdout


def test_explain_reports_the_offsets(tmp_path):
    main(["generate", "voc-fcn8s", "--out", str(tmp_path), "--width", "0.0625"])
    r = netgen("explain", tmp_path / "voc-fcn8s" / "deploy.prototxt", "--size", "375x500")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.strip()}
    assert "1x21x375x500" in rows["score"]
    assert rows["score"][-3] == "31" and rows["score_pool4c"][-3] == "5" and rows["score_pool3c"][-3] == "9"


def test_explain_on_a_malformed_prototxt_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer {\n  name: "conv1"\n  type: "Convolution"\n  convolution_param { num_output: many }\n}\n')
    r = netgen("explain", bad, "--size", "100x100")
    assert_user_error(r, f"{bad}:4:")


@pytest.mark.parametrize("size", ["100", "0x10", "axb", "10x"])
def test_explain_bad_size(tmp_path, size):
    assert_user_error(netgen("explain", REPO / "models" / "voc-fcn32s" / "deploy.prototxt", "--size", size),
                      "--size")


def test_explain_missing_file(tmp_path):
    assert_user_error(netgen("explain", tmp_path / "nope.prototxt", "--size", "10x10"), "nope.prototxt")


def test_explain_reads_a_legacy_v1_net(tmp_path, capsys):
    """The published classifier prototxts use V1 `layers` with net-level inputs."""
    v1 = tmp_path / "v1.prototxt"
    v1.write_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 20 input_dim: 20\n'
                  'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" '
                  'convolution_param { num_output: 2 kernel_size: 3 stride: 2 } }\n')
    assert main(["explain", str(v1), "--size", "20x20"]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("c "))
    assert row[1] == "Convolution" and "1x2x9x9" in row and "1/2" in row


def test_explain_of_an_empty_file_names_it(tmp_path):
    empty = tmp_path / "empty.prototxt"
    empty.write_text("")
    assert_user_error(netgen("explain", empty), str(empty), "no input blob")
