"""Regression tests from a user's audit of `python -m surgery` / surgery/transplant.py.

Each test is a mistake a user made that once gave a traceback, a misleading message, a
silently wrong result or a late failure. Run in process (main(argv)) to stay fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netgen.errors import FcnkitError
from netgen.fcn import fcn_vgg16
from netgen.fileio import atomic_write, check_writable
from netgen.netspec import L, NetSpec
from netgen.schema import write_prototxt
from surgery import cli
from surgery.caffemodel import Weights, load_weights, save_weights
from surgery.classifiers import vgg16
from surgery.shapes import net_params
from surgery.transplant import transplant

WIDTH = 1 / 16


def _random_weights(net, seed: int = 0) -> Weights:
    rng = np.random.default_rng(seed)
    types = {layer.name: layer.type for layer in net.layer}
    w = Weights()
    for name, params in net_params(net).items():
        w[name] = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        w.types[name] = types[name]
    return w


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A width-scaled V1 VGG16 classifier caffemodel, its FCN-32s deploy net and FCN weights."""
    d = tmp_path_factory.mktemp("audit")
    classifier = vgg16(width=WIDTH, batch=1)
    save_weights(d / "vgg16.caffemodel", _random_weights(classifier), net=classifier,
                 legacy=True)
    fcn = fcn_vgg16("deploy", "32s", width=WIDTH)
    write_prototxt(d / "fcn32s.prototxt", fcn)
    save_weights(d / "fcn32s.caffemodel", _random_weights(fcn, 1), net=fcn)
    return d


def user_error(capsys, main, *args) -> str:
    """Run a CLI main as the shell would; return its one error line (exit 2, nothing else)."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_output_that_is_a_folder_is_named_and_leaves_no_temp_file(files, capsys):
    before = listing(files) | listing(files.parent)
    line = user_error(capsys, cli.main, "convert", files / "vgg16.caffemodel", files)
    assert str(files) in line and "folder" in line and ".tmp" not in line
    line = user_error(capsys, cli.transplant_script, files / "vgg16.caffemodel",
                      "--net", files / "fcn32s.prototxt", "--out", files)
    assert str(files) in line and "folder" in line
    assert listing(files) | listing(files.parent) == before
    with pytest.raises(FcnkitError, match="is a folder"):
        with atomic_write(files, "wb") as f:
            f.write(b"x")


@pytest.mark.parametrize("command", ["transplant", "stage-init", "interp", "expand-score"])
def test_missing_output_folder_fails_before_any_work(files, capsys, command):
    out = files / "absent" / "o.caffemodel"
    args = {"transplant": ("transplant", files / "vgg16.caffemodel",
                           "--net", files / "fcn32s.prototxt"),
            "stage-init": ("stage-init", files / "fcn32s.caffemodel",
                           "--net", files / "fcn32s.prototxt"),
            "interp": ("interp", files / "fcn32s.caffemodel", "--layer", "upscore"),
            "expand-score": ("expand-score", files / "fcn32s.caffemodel",
                             "--layer", "score_fr", "--classes", "30")}[command]
    line = user_error(capsys, cli.main, *args, "--out", out)
    assert str(out) in line and "does not exist" in line
    assert capsys.readouterr().out == ""  # no report printed for work that then failed
    assert not out.parent.exists()


@pytest.mark.parametrize("option, value", [("--seed", "-1"), ("--seed", "x"),
                                           ("--input-channels", "0"),
                                           ("--input-channels", "color=3,x")])
def test_bad_transplant_options_are_one_line_errors(files, capsys, option, value):
    out = files / "o.caffemodel"
    line = user_error(capsys, cli.transplant_script, files / "vgg16.caffemodel",
                      "--net", files / "fcn32s.prototxt", option, value, "--out", out)
    assert option in line
    assert not out.exists()


def test_negative_std_is_refused(files, capsys):
    out = files / "e.caffemodel"
    line = user_error(capsys, cli.main, "expand-score", files / "fcn32s.caffemodel", "--layer",
                      "score_fr", "--classes", "30", "--std", "-1", "--out", out)
    assert "--std" in line and not out.exists()


@pytest.mark.parametrize("args", [(), ("bogus",), ("info",)])
def test_usage_mistakes_are_one_line(capsys, args):
    assert "--help" in user_error(capsys, cli.main, *args)


def test_script_usage_mistake_is_one_line(capsys):
    assert "SOURCE" in user_error(capsys, cli.transplant_script)


def test_interp_refuses_a_trained_convolution(files, capsys):
    """`interp --layer fc7` once overwrote fc7's trained 1x1 kernels with an identity."""
    out = files / "i.caffemodel"
    line = user_error(capsys, cli.main, "interp", files / "fcn32s.caffemodel", "--layer", "fc7",
                      "--out", out)
    assert "'fc7'" in line and "Convolution" in line and not out.exists()


def test_convert_names_the_prototxt_missing_a_layer(files, capsys):
    out = files / "c.caffemodel"
    line = user_error(capsys, cli.main, "convert", files / "vgg16.caffemodel", out,
                      "--net", files / "fcn32s.prototxt")
    assert str(files / "fcn32s.prototxt") in line and "'fc8'" in line
    assert "net ''" not in line and not out.exists()


def test_input_channels_per_top_fill_a_second_image_input(files, capsys):
    """NYUD color+HHA: the `hha` top of the Python data layer has 3 channels; without
    TOP=N the CLI could only say 1 (labels) and transplanting into conv1_1hha failed."""
    n = NetSpec()
    n.color, n.hha, n.label = L.Python(module="m", layer="Layer", ntop=3)
    n.conv1_1hha = L.Convolution(n.hha, num_output=4, kernel_size=3, pad=1)
    net_path = files / "hha.prototxt"
    write_prototxt(net_path, n.to_proto())
    source = Weights(conv1_1=[np.ones((4, 3, 3, 3), np.float32), np.ones(4, np.float32)],
                     types={"conv1_1": "Convolution"})
    src_path = files / "conv1.caffemodel"
    save_weights(src_path, source)
    out = files / "hha.caffemodel"
    assert "conv1_1hha" in user_error(capsys, cli.transplant_script, src_path, "--net", net_path,
                                      "--suffix", "hha", "--out", out)
    assert not out.exists()
    cli.transplant_script([str(src_path), "--net", str(net_path), "--suffix", "hha",
                           "--input-channels", "color=3,hha=3", "--out", str(out)])
    assert load_weights(out)["conv1_1hha"][0].shape == (4, 3, 3, 3)
    line = user_error(capsys, cli.transplant_script, src_path, "--net", net_path, "--suffix",
                      "hha", "--input-channels", "colr=3,hha=3", "--out", files / "x.caffemodel")
    assert "'colr'" in line


def test_input_channels_may_name_input_layer_tops():
    """Solvers pass the channels of every source top, Input layers' included."""
    net = fcn_vgg16("deploy", "32s", width=WIDTH)
    source = Weights(conv1_1=[np.ones((4, 3, 3, 3), np.float32), np.ones(4, np.float32)])
    weights, _ = transplant(net, source, input_channels={"data": 3})
    assert weights["conv1_1"][0].shape == (4, 3, 3, 3)


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "f.caffemodel") == tmp_path
    with pytest.raises(FcnkitError, match="does not exist"):
        check_writable(tmp_path / "no" / "f")
    with pytest.raises(FcnkitError, match="is a folder"):
        check_writable(tmp_path)


def test_explain_sizes_a_classic_data_layer_as_caffe_does():
    """A CaffeNet-style train net (Data layer, crop_size, per-image label) once failed in
    explain: the label was taken as a 1xHxW map and crop_size ignored."""
    from netgen.explain import explain

    n = NetSpec()
    n.data, n.label = L.Data(source="x", batch_size=4, ntop=2,
                             transform_param=dict(crop_size=27))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=3)
    n.ip = L.InnerProduct(n.conv, num_output=5)
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    rows = {line.split()[0]: line for line in explain(n.to_proto(), (50, 60)).splitlines()
            if line}
    assert "1x3x27x27, 1 " in rows["data"]
    assert "1x2x25x25" in rows["conv"]


def test_info_calls_a_legacy_dims_classifier_a_classifier(files, capsys):
    """A V1 file without layer shapes keeps fc6 as 1x1x256x1568: still an InnerProduct."""
    weights = load_weights(files / "vgg16.caffemodel")
    bare = files / "bare_v1.caffemodel"
    save_weights(bare, Weights(weights.items(), types=weights.types), legacy=True)
    assert load_weights(bare)["fc6"][0].ndim == 4
    cli.main(["info", str(bare)])
    assert "looks like: VGG16 classifier" in capsys.readouterr().out


def test_atomic_write_keeps_the_replaced_files_permissions(tmp_path):
    """Overwriting a private (0600) file once made it world-readable (fixed 0644)."""
    import os
    import stat

    from netgen.fileio import write_text_atomic

    private = tmp_path / "private.prototxt"
    private.write_text("old")
    private.chmod(0o600)
    write_text_atomic(private, "new")
    assert private.read_text() == "new"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    umask = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "fresh.prototxt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "fresh.prototxt").stat().st_mode) == 0o640


@pytest.mark.parametrize("error, line", [
    (OSError(28, "No space left on device"), "error: No space left on device"),
    (FileNotFoundError(2, "No such file or directory", "x.caffemodel"),
     "error: x.caffemodel: No such file or directory"),
])
def test_os_errors_read_as_one_clean_line(capsys, error, line):
    """An OSError without a file name once printed `error:: ...`."""
    from netgen.errors import cli_entry

    @cli_entry
    def main():
        raise error

    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == line


def test_output_into_a_closed_pipe_is_quiet():
    """`python -m netgen list | head -1` once ended with `error:: Broken pipe` (or an
    'Exception ignored' traceback at exit)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-m", "netgen", "list"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141), err
    assert err == ""


def test_a_mean_file_given_as_caffemodel_is_named_as_such(tmp_path, capsys):
    from netgen.proto import caffe_pb2

    mean = caffe_pb2.BlobProto()
    mean.shape.dim.extend([1, 3, 2, 2])
    mean.data.extend([1.0] * 12)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(mean.SerializeToString())
    line = user_error(capsys, cli.main, "info", path)
    assert str(path) in line and "not a caffemodel" in line


def test_a_solver_given_as_net_is_named_as_such(capsys):
    from netgen.cli import main as netgen_main

    solver = Path(__file__).resolve().parents[1] / "models" / "voc-fcn32s" / "solver.prototxt"
    line = user_error(capsys, netgen_main, "explain", solver)
    assert str(solver) in line and "solver definition" in line


def test_a_malformed_net_keeps_its_file_line_error(tmp_path, capsys):
    from netgen.cli import main as netgen_main

    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer {\n  name: "c"\n  typo: 1\n}\n')
    line = user_error(capsys, netgen_main, "explain", bad)
    assert f"{bad}:3:" in line and "typo" in line


def test_interp_with_a_net_without_deconvolutions_writes_nothing(files, tmp_path, capsys):
    """It once wrote an unchanged copy, saying 'set in no layer'."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=3)
    net = tmp_path / "plain.prototxt"
    write_prototxt(net, n.to_proto())
    out = tmp_path / "o.caffemodel"
    line = user_error(capsys, cli.main, "interp", files / "fcn32s.caffemodel", "--net", net,
                      "--out", out)
    assert str(net) in line and "Deconvolution" in line and not out.exists()


def test_input_size_option_sizes_an_inner_product_over_a_data_layer(tmp_path, capsys):
    """The error asked the user to 'give the input size', which the CLI had no option for."""
    n = NetSpec()
    n.data = L.Python(module="m", layer="Layer")
    n.conv1 = L.Convolution(n.data, num_output=2, kernel_size=3)
    n.ip = L.InnerProduct(n.conv1, num_output=5)
    net = tmp_path / "classifier.prototxt"
    write_prototxt(net, n.to_proto())
    src = tmp_path / "conv1.caffemodel"
    save_weights(src, Weights(conv1=[np.ones((2, 3, 3, 3), np.float32),
                                     np.ones(2, np.float32)], types={"conv1": "Convolution"}))
    out = tmp_path / "o.caffemodel"
    assert "--input-size" in user_error(capsys, cli.transplant_script, src, "--net", net,
                                        "--out", out)
    assert "--input-size" in user_error(capsys, cli.transplant_script, src, "--net", net,
                                        "--input-size", "20", "--out", out)
    assert not out.exists()
    cli.transplant_script([str(src), "--net", str(net), "--input-size", "10x12",
                           "--out", str(out)])
    assert load_weights(out)["ip"][0].shape == (5, 2 * 8 * 10)
