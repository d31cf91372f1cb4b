"""solve.py / solvers.score on a new user's mistakes: each is one error line and leaves nothing
behind (found by auditing the training side)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import solve
from netgen.writer import generate

from solve_helpers import files_under


@pytest.fixture(scope="module")
def voc_model(tmp_path_factory):
    """A width-1/16 voc-fcn32s folder whose data paths (../../data/...) point nowhere."""
    return generate("voc-fcn32s", tmp_path_factory.mktemp("audit") / "models", width=1 / 16)


def _one_error_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        solve.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_empty_stages_is_an_error_not_a_full_run(capsys, voc_model):
    before = files_under(voc_model.parent)
    err = _one_error_line(capsys, [str(voc_model), "--stages", ""])
    assert "--stages ''" in err
    assert files_under(voc_model.parent) == before


def test_missing_dataset_names_the_resolved_folder_and_leaves_no_snapshot_dir(
        capsys, voc_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run from elsewhere: the data path is still read from the model folder
    err = _one_error_line(capsys, [str(voc_model), "--iters", "1", "--quiet"])
    resolved = os.path.abspath(voc_model / "../../data/sbdd/dataset")
    assert f"sbdd_dir ../../data/sbdd/dataset (= {resolved}) is not a directory" in err, err
    assert not (voc_model / "snapshot").exists(), "a failed run left an empty snapshot folder"
    assert list(tmp_path.iterdir()) == []


def test_score_reads_infer_output_against_a_larger_ground_truth_folder(tmp_path, capsys):
    """infer.py's folder (labels + overlays) scores against a VOC-like folder of every split."""
    from data_helpers import write_index_png, write_rgb
    from solvers.score import fast_hist, main, metrics

    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "SegmentationClass", tmp_path / "predictions"
    gt_dir.mkdir(), pred_dir.mkdir()
    hist = np.zeros((3, 3), np.int64)
    for i in range(4):
        gt = rng.integers(0, 3, (5, 6), dtype=np.uint8)
        write_index_png(gt_dir / f"im{i}.png", gt)
        if i < 2:  # only two images were segmented
            pred = rng.integers(0, 3, (5, 6), dtype=np.uint8)
            write_index_png(pred_dir / f"im{i}.png", pred)
            write_rgb(pred_dir / f"im{i}_overlay.png", np.zeros((5, 6, 3), np.uint8))
            hist += fast_hist(gt, pred, 3)
    assert main([str(pred_dir), str(gt_dir), "--classes", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{100 * metrics(hist)['mean_iu']:6.2f}" in out
    assert out.splitlines()[-1].split() == ["images", "scored", "2"]


def test_score_usage_mistake_is_one_line(capsys):
    from solvers.score import main

    with pytest.raises(SystemExit) as e:
        main(["a", "b"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "--classes" in err


def test_segmentation_test_scores_each_val_image_once(tmp_path):
    """A solver's test_iter (5 here) larger than the val split (2 images) must not count images
    twice, nor score another mix of images at the next test."""
    from PIL import Image

    from solve_helpers import one_thread, tiny_models
    from solvers.engine import Net
    from solvers.seg_test import seg_test
    from solvers.solver_files import heads, read_solver_files
    from solvers.train import run_in

    solver = tiny_models(tmp_path, iters=(1, 1, 1))[0]
    files = read_solver_files(solver)
    data = tmp_path / "data"
    ids = (data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    n_classes = 6
    valid = sum(int((np.array(Image.open(data / "SegmentationClass" / f"{i}.png"))
                     < n_classes).sum()) for i in ids)
    with run_in(solver.parent), one_thread():
        net = Net(str(solver.parent / "val.prototxt"), "TEST")
        first = seg_test(net, heads(files.test_net), 5, [], progress=False)
        second = seg_test(net, heads(files.test_net), 5, [], progress=False)
    (head,) = first
    assert first[head]["n_pixels"] == second[head]["n_pixels"] == valid
    assert first[head]["pixel_acc"] == second[head]["pixel_acc"]


@pytest.mark.parametrize("iters, test_every", [(1, 5), (2, 1)])
def test_bad_val_file_keeps_the_training_done(tmp_path, monkeypatch, iters, test_every):
    """A val label (the second: the first is read when the net is built) that fails at the
    test (final or mid-run) still leaves a snapshot of the iterations trained, to resume from
    once the file is fixed. The solver's own snapshot interval (5) is not reached. (The label
    survey at data layer setup reads only the first item here, as it samples a large split.)"""
    from solvers.data.base import SegDataset

    monkeypatch.setattr(SegDataset, "SURVEY_ITEMS", 1)
    from data_helpers import write_rgb
    from netgen.errors import FcnkitError
    from solve_helpers import one_thread, tiny_models
    from solvers.solver_files import read_solver_files
    from solvers.train import train

    solver = tiny_models(tmp_path, iters=(5, 5, 5))[0]
    data = tmp_path / "data"
    bad = data / "SegmentationClass" / ((data / "ImageSets" / "Segmentation" / "val.txt")
                                        .read_text().split()[1] + ".png")
    write_rgb(bad, np.zeros((32, 32, 3), np.uint8))
    with one_thread(), pytest.raises(FcnkitError, match="RGB colour image"):
        train(solver, backend="torch", iters=iters, test_every=test_every, progress=False)
    files = read_solver_files(solver)
    first_test = min(iters, test_every)
    assert files.weights_file(first_test).is_file() and files.state_file(first_test).is_file()


def test_resumed_run_logs_the_same_stage_label(tmp_path):
    """metrics.jsonl records of a resumed run carry the stage label the first run wrote."""
    import json

    from solve_helpers import one_thread, tiny_models

    solver = tiny_models(tmp_path, iters=(2, 2, 2))[0]
    model = solver.parent
    with one_thread():
        assert solve.main([str(model), "--iters", "1", "--test-every", "0", "--quiet"]) == 0
        state = next((model / "snapshot").glob("*_iter_1.solverstate"))
        assert solve.main([str(model), "--resume", str(state), "--iters", "1",
                           "--test-every", "0", "--quiet"]) == 0
    records = [json.loads(line) for line in (model / "snapshot" / "metrics.jsonl").open()]
    assert [r["phase"] for r in records] == ["start", "train", "start", "train"]
    assert {r.get("stage") for r in records} == {model.name}


def test_classifier_of_another_width_names_the_weights_file(tmp_path, capsys):
    from solve_helpers import tiny_models
    from solvers.engine import Net
    from surgery import caffemodel, classifiers

    model = tiny_models(tmp_path, iters=(1, 1, 1))[0].parent
    vgg = classifiers.vgg16(width=1 / 4, batch=1, size=32)
    weights = tmp_path / "vgg16-wide.caffemodel"
    caffemodel.save_weights(weights, Net(vgg, "TEST").to_weights(), net=vgg, legacy=True)
    before = files_under(model)
    err = _one_error_line(capsys, [str(model), "--weights", str(weights), "--quiet"])
    assert f"--weights {weights}: " in err and "conv1_1" in err, err
    assert files_under(model) == before


def test_progress_bars_redraw_rarely_into_a_log_file(tmp_path):
    """solve.py > log 2>&1: a bar redraw per 30 s, not ten per second."""
    import io

    from solvers.progress import LOG_INTERVAL, bar

    log = io.StringIO()
    with bar(total=10**6, file=log) as b:
        for _ in range(20000):
            b.update(1)
    assert b.mininterval == LOG_INTERVAL
    assert log.getvalue().count("\r") <= 3, log.getvalue()[:300]
