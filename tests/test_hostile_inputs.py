"""Hostile files (tests/data/hostile, one of each kind seen in the wild or by fuzzing): each
reader that meets one from the command line accepts it or prints one `error:` line, exits
non-zero, without a traceback, in under 10 s of CPU time (user + system; wall time, which a
loaded CI machine stretches, only has to stay under a minute) and 1 GiB peak memory (ru_maxrss
of the process).

Also the atomic writes those readers' outputs rely on: a failed write (here the kernel's
file-size limit, RLIMIT_FSIZE, which fails write() with EFBIG as a full disk fails it with
ENOSPC) names the file and leaves nothing behind; temp files of a killed writer are removed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).parent / "data" / "hostile"
LIMIT_S, LIMIT_BYTES = 10.0, 1 << 30

# python -c wrappers: a library reader behind the project's CLI error handling (cli_entry)
SOLVERSTATE = ("import sys; from netgen.errors import cli_entry; "
               "from solvers.engine.snapshot import read_solverstate; "
               "cli_entry(read_solverstate)(sys.argv[1])")
ENGINE = ("import sys; from netgen.errors import cli_entry; from solvers.engine.net import Net; "
          "cli_entry(Net)(sys.argv[1], 'TEST')")
PARAM_STR = ("import sys; from pathlib import Path; from netgen.errors import cli_entry; "
             "from solvers.data.layers import dataset_from_layer; "
             "cli_entry(lambda p: dataset_from_layer('solvers.data.layers', "
             "'SyntheticSegDataLayer', Path(p).read_text()))(sys.argv[1])")


def run_measured(args: list[str], cwd: Path, timeout: float = 60.0) -> tuple[int, str, float, int]:
    """Run a command; (exit status, stderr, CPU seconds, peak resident bytes of that process).

    The command runs under tests/measured_child.py, so its peak is its own and not the pytest
    worker's (see there). Past `timeout` wall seconds the process group is killed and the CPU
    time counts as the whole timeout."""
    import json
    import signal
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as err:
        report = Path(tmp) / "usage.json"
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("measured_child.py")),
                                 str(report), *args], cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            err.seek(0)
            return proc.returncode, err.read().decode(errors="replace"), timeout, 0
        usage = json.loads(report.read_text())
        err.seek(0)
        return rc, err.read().decode(errors="replace"), usage["cpu_s"], usage["peak_bytes"]


def check_clean(rc: int, stderr: str, seconds: float, peak: int, *, accepted: bool = False,
                says: str = "") -> None:
    assert seconds < LIMIT_S, f"took {seconds:.1f} s of CPU time"
    assert peak < LIMIT_BYTES, f"peak memory {peak / 2**20:.0f} MiB"
    assert "Traceback" not in stderr, stderr
    if accepted:
        assert rc == 0, stderr
        return
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1 and lines[0].startswith("error: "), (rc, stderr)
    assert says in lines[0], lines[0]


# file -> (command, what the one error line must say; None: accepted)
CASES = {
    "noncanonical-key.caffemodel": (["-m", "surgery", "info"], None),
    "nonutf8-layer-name.caffemodel": (["-m", "surgery", "info"], "layer 0: name is not UTF-8"),
    "nonutf8-v1-layer.caffemodel": (["-m", "surgery", "info"], "type is not UTF-8"),
    "negative-legacy-dims.caffemodel": (["-m", "surgery", "info"], "negative blob dimension"),
    "hdf5-malformed.caffemodel.h5": (["-m", "surgery", "info"], "corrupt HDF5 file"),
    "hdf5-fill-value-3.6GB.caffemodel.h5": (["-m", "surgery", "info"], "only a fill value"),
    "hdf5-51-bytes.caffemodel.h5": (["-m", "surgery", "info"], "truncated HDF5 file"),
    # found by fuzzing: libhdf5's H5Oget_info loops for ever on its object header
    "hdf5-header-loop.caffemodel.h5": (["-m", "surgery", "info"], "bad object header version"),
    "overflowing-dims.solverstate": (["-c", SOLVERSTATE], "does not match its 0 values"),
    "hdf5-iter-is-text.solverstate.h5": (["-c", SOLVERSTATE], "/iter holds |S1 data"),
    "group-zero.prototxt": (["-m", "netgen", "explain"], "group-zero.prototxt:2: layer c "
                                                          "(Convolution): group must be positive"),
    "param_str-huge-length.txt": (["-c", PARAM_STR], "key 'length'"),
    "param_str-huge-size.txt": (["-c", PARAM_STR], "key 'size'"),
}


def test_every_hostile_file_has_a_case():
    assert sorted([*CASES, "label-14000x14000.png"]) == sorted(
        p.name for p in HOSTILE.iterdir())


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file(name):
    command, says = CASES[name]
    result = run_measured([sys.executable, *command, str(HOSTILE / name)], ROOT)
    check_clean(*result, accepted=says is None, says=says or "")


def test_noncanonical_key_reads_as_protobuf_does():
    """The two-byte key of field 5 (data, fixed32) is what protobuf itself decodes."""
    from netgen.proto import caffe_pb2
    from surgery.caffemodel import load_weights

    path = HOSTILE / "noncanonical-key.caffemodel"
    reference = caffe_pb2.NetParameter.FromString(path.read_bytes())
    weights = load_weights(path)
    assert list(weights) == [reference.layer[0].name]
    assert weights["x"][0].reshape(-1).tolist() == list(reference.layer[0].blobs[0].data) == [1.0]


def test_group_zero_in_the_engine_names_file_and_line():
    result = run_measured([sys.executable, "-c", ENGINE, str(HOSTILE / "group-zero.prototxt")],
                          ROOT)
    check_clean(*result, says="group-zero.prototxt:2: layer 'c' (Convolution)")


def test_decompression_bomb_label_in_score(tmp_path):
    """A 190 KB PNG declaring 14000x14000 pixels, as ground truth and as prediction."""
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes((HOSTILE / "label-14000x14000.png").read_bytes())
    result = run_measured([sys.executable, "-m", "solvers.score", str(tmp_path / "pred"),
                           str(tmp_path / "gt"), "--classes", "21"], ROOT)
    check_clean(*result, says="a.png has more than 67 M pixels; refused")


def test_decompression_bomb_image_in_infer(tmp_path):
    result = run_measured([sys.executable, "infer.py", "models/voc-fcn32s/deploy.prototxt",
                           str(tmp_path / "none.caffemodel"),
                           str(HOSTILE / "label-14000x14000.png"), "-o", str(tmp_path / "out")],
                          ROOT)
    check_clean(*result, says="label-14000x14000.png has more than 67 M pixels")


def test_a_4000x3000_photo_is_read(tmp_path):
    from PIL import Image

    from solvers.data.readers import read_rgb

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (200, 100, 50)).save(path, quality=50)
    assert read_rgb(path).shape == (3000, 4000, 3)


def test_failed_write_names_the_file_and_leaves_nothing(tmp_path):
    """write() failing (EFBIG under RLIMIT_FSIZE) in a binary and an HDF5 snapshot."""
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); import numpy as np; "
            "from netgen.errors import cli_entry; "
            "from solvers.engine.snapshot import SolverState, write_solverstate; "
            "cli_entry(write_solverstate)(sys.argv[1], "
            "SolverState(1, 'x', 0, [np.ones(10000, np.float32)]))")
    for name in ("a.solverstate", "a.solverstate.h5"):
        out = tmp_path / name
        result = run_measured([sys.executable, "-c", code, str(out)], ROOT)
        check_clean(*result, says=f"{out}: cannot write: File too large")
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_of_a_killed_writer_is_removed(tmp_path):
    """A temp file whose process is gone goes at the next snapshot; a live one stays."""
    import subprocess

    from solvers.engine.snapshot import SolverState, read_solverstate, write_solverstate

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".train_iter_4.solverstate.{dead}.k3j2x9.tmp"
    stale.write_bytes(b"half a snapshot")
    live = tmp_path / f".train_iter_4.caffemodel.{os.getpid()}.abcdef.tmp"
    live.write_bytes(b"being written")
    write_solverstate(tmp_path / "train_iter_8.solverstate",
                      SolverState(8, "train_iter_8.caffemodel", 0, [np.ones(3, np.float32)]))
    assert not stale.exists() and live.exists()
    assert read_solverstate(tmp_path / "train_iter_8.solverstate").iter == 8


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 greyscale PNG whose IHDR (CRC recomputed) declares width x height."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR payload starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side", [9000, 12000, 20000])  # under, between, past PIL's own limits
def test_pixel_limit_from_the_header_without_warnings(tmp_path, side):
    import warnings

    from netgen.errors import FcnkitError
    from solvers.data.readers import MAX_PIXELS, read_index_png, read_rgb

    assert 4000 * 3000 < MAX_PIXELS < 9000 * 9000
    path = _png_declaring(tmp_path / "big.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would be a second line
        for read in (read_index_png, read_rgb):
            with pytest.raises(FcnkitError, match="M pixels"):
                read(path)


# ---- kinds beyond the example files, in-process (the CLIs above show how errors surface)

def _h5_weights(path: Path, build) -> Path:
    import h5py

    with h5py.File(path, "w") as h5:
        build(h5, h5.create_group("data"))
    return path


@pytest.mark.parametrize("kind,says", [
    ("soft", "is a soft link; links are not followed"),
    ("external", "is an external link; links are not followed"),
    ("cycle", "links back to an object already read"),
    ("fill", "stores no data (only a fill value)"),
    ("sparse-chunks", "more than 1100x compression is refused"),
    ("text", "holds |S5 data, expected floats or integers"),
    ("data-is-soft-link", "no /data group"),
])
def test_hdf5_weights_kinds(tmp_path, kind, says):
    import h5py

    from netgen.errors import FcnkitError
    from surgery.caffemodel import load_weights

    def build(h5, data):
        layer = data.create_group("conv")
        if kind == "soft":
            layer["0"] = h5py.SoftLink("/elsewhere")
        elif kind == "external":
            layer["0"] = h5py.ExternalLink("/etc/passwd", "/x")
        elif kind == "cycle":
            layer["loop"] = layer
        elif kind == "fill":
            layer.create_dataset("0", shape=(1000, 1000), dtype="f4", fillvalue=1.0)
        elif kind == "sparse-chunks":
            d = layer.create_dataset("0", shape=(4000, 4000), dtype="f4", chunks=(10, 10))
            d[0:10, 0:10] = 1.0
        elif kind == "text":
            layer["0"] = np.array([b"hello"])
        elif kind == "data-is-soft-link":
            del h5["data"]
            h5.create_group("real")
            h5["data"] = h5py.SoftLink("/real")

    path = _h5_weights(tmp_path / "w.caffemodel.h5", build)
    with pytest.raises(FcnkitError, match=re_escape(says)):
        load_weights(path)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_hdf5_compressed_weights_still_load(tmp_path):
    """gzip-compressed chunked datasets (h5py's usual way) within DEFLATE's ratio load."""
    from surgery.caffemodel import load_weights

    values = np.arange(6000, dtype=np.float32).reshape(60, 100)
    path = _h5_weights(tmp_path / "w.caffemodel.h5", lambda h5, data: data.create_group(
        "fc").create_dataset("0", data=values, compression="gzip", chunks=(6, 10)))
    assert np.array_equal(load_weights(path)["fc"][0], values)


@pytest.mark.parametrize("change,says", [
    (lambda h5: h5.__setitem__("iter2", 1) or h5.move("iter", "x") or h5.move("iter2", "iter")
     or None, None),  # an int64 scalar iter (h5py's default) is accepted
    (lambda h5: _replace(h5, "iter", np.array([1.5])), "/iter holds float64 data"),
    (lambda h5: _replace(h5, "iter", np.array([1, 2], np.int32)), "/iter holds 2 values"),
    (lambda h5: _replace(h5, "iter", np.array([2**40])), "/iter = 1099511627776 is outside"),
    (lambda h5: _replace(h5, "current_step", np.array([b"x"])), "/current_step holds |S1"),
    (lambda h5: _replace(h5, "learned_net", np.array(b"\xff\xfe")), "/learned_net is not UTF-8"),
    (lambda h5: _replace(h5, "learned_net", np.array([1.0])), "/learned_net holds float64"),
    (lambda h5: _replace(h5, "history", np.ones(3)), "/history is a dataset"),
    (lambda h5: h5["history"].move("0", "7"), "history datasets must be named 0..1"),
    (lambda h5: _replace(h5["history"], "0", np.array([b"ab"])), "/history/0 holds |S2"),
])
def test_hdf5_solverstate_kinds(tmp_path, change, says):
    import h5py

    from netgen.errors import FcnkitError
    from solvers.engine.snapshot import SolverState, read_solverstate, write_solverstate

    path = tmp_path / "s.solverstate.h5"
    write_solverstate(path, SolverState(3, "net.caffemodel", 1, [np.ones(2, np.float32),
                                                                np.zeros((2, 2), np.float32)]))
    with h5py.File(path, "r+") as h5:
        change(h5)
    if says is None:
        assert read_solverstate(path).iter == 1
    else:
        with pytest.raises(FcnkitError, match=re_escape(says)):
            read_solverstate(path)


def _replace(group, name: str, value) -> None:
    del group[name]
    group[name] = value


def _caffemodel(*blob_fields: bytes) -> bytes:
    from surgery import wire

    blob = b"".join(blob_fields)
    layer = wire.encode_len_field(1, b"conv") + wire.encode_len_field(7, blob)
    return wire.encode_len_field(100, layer)


@pytest.mark.parametrize("fields,says", [
    # shape {dim: 2**32, dim: 2**32}: a product past int64, no data
    ((lambda w: w.encode_len_field(7, w.encode_packed_varints(1, [2**32, 2**32]))),
     "needs 18446744073709551616 values but 0 are stored"),
    ((lambda w: w.encode_len_field(7, w.encode_packed_varints(1, [1] * 33))), "more than 32"),
    ((lambda w: w.encode_len_field(7, w.encode_packed_varints(1, [0])) + w.encode_len_field(
        5, np.ones(2, "<f4").tobytes())), "needs 0 values but 2 are stored"),
    ((lambda w: w.encode_varint(2**29 << 3)), "field number 536870912 beyond"),
    ((lambda w: bytes([0x80] * 10) + b"\x01"), "varint longer than 10 bytes"),
])
def test_binary_caffemodel_kinds(tmp_path, fields, says):
    from netgen.errors import FcnkitError
    from surgery import wire
    from surgery.caffemodel import load_weights

    path = tmp_path / "w.caffemodel"
    path.write_bytes(_caffemodel(fields(wire)))
    with pytest.raises(FcnkitError, match=re_escape(says)):
        load_weights(path)


def test_noncanonical_keys_of_every_field_read_like_protobuf(tmp_path):
    """Keys padded to 2..5 bytes throughout (packed, unpacked and varint fields); a 6-byte
    key is refused, as protobuf refuses it."""
    from netgen.errors import FcnkitError
    from netgen.proto import caffe_pb2
    from surgery import wire
    from surgery.caffemodel import load_weights

    def key(number: int, wire_type: int, pad: int) -> bytes:
        raw = bytearray(wire.encode_key(number, wire_type))
        raw[-1] |= 0x80
        return bytes(raw) + b"\x80" * (pad - 1) + b"\x00"

    floats = np.arange(1, 5, dtype="<f4")
    shape = key(1, wire.VARINT, 2) + b"\x02" + key(1, wire.VARINT, 3) + b"\x02"
    blob_a = key(7, wire.LEN, 2) + bytes([len(shape)]) + shape + b"".join(
        key(5, wire.I32, 3) + v.tobytes() for v in floats)
    blob_b = key(5, wire.LEN, 4) + bytes([16]) + floats.tobytes()
    layer = (key(1, wire.LEN, 2) + b"\x01c" + key(7, wire.LEN, 2) + bytes([len(blob_a)]) + blob_a
             + key(7, wire.LEN, 4) + bytes([len(blob_b)]) + blob_b)
    data = key(100, wire.LEN, 3) + wire.encode_varint(len(layer)) + layer
    path = tmp_path / "w.caffemodel"
    path.write_bytes(data)
    reference = caffe_pb2.NetParameter.FromString(data).layer[0]
    weights = load_weights(path)
    assert [list(b.data) for b in reference.blobs] == [a.reshape(-1).tolist()
                                                        for a in weights["c"]]
    assert weights["c"][0].shape == (2, 2)
    path.write_bytes(key(100, wire.LEN, 4) + wire.encode_varint(len(layer)) + layer)
    with pytest.raises(FcnkitError, match="field key of 6 bytes"):
        load_weights(path)


@pytest.mark.parametrize("param_str,says", [
    ("{'length': 100000000}", "'length' = 100000000: expected an integer in 1..10000000"),
    ("{'size': (10000, 10000)}", "more than 67108864 pixels"),
    ("{'crop_size': 9000}", "more than 67108864 pixels"),
    ("{'batch_size': 5000}", "expected an integer in 1..1024"),
    ("{'scale': (0.5, 100.0)}", "expected 0.015625 <= low <= high <= 16"),
    ("{'seed': 18446744073709551616}", "expected an integer in 0..2**64-1"),
    ("{'split': '" + "x" * 5000 + "'}", "at most 4096 characters"),
    ("{'splitt': 'train'}", "unknown key 'splitt'"),
    ("{'split': 'train', 'pad': [" + "0, " * 30000 + "]}", "param_str of"),
])
def test_param_str_bounds(param_str, says):
    from netgen.errors import FcnkitError
    from solvers.data.layers import dataset_from_layer

    with pytest.raises(FcnkitError, match=re_escape(says)):
        dataset_from_layer("solvers.data.layers", "SyntheticSegDataLayer", param_str)


@pytest.mark.parametrize("text,says", [
    ('layer { name: "c" type: "Convolution" bottom: "data" top: "data" convolution_param { '
     'num_output: 2 kernel_size: 3 } }', None),  # in place: Caffe allows it (shapes change)
    ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { '
     'num_output: 2 kernel_size: 3 } }\nlayer { name: "d" type: "ReLU" bottom: "c" top: "data" }',
     "layer d (ReLU): top blob 'data' produced by multiple sources"),
    ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { '
     'num_output: 2 kernel_size: 3 stride: 0 } }', "stride must be positive"),
    ('layer { name: "c" type: "Pooling" bottom: "data" top: "c" pooling_param { '
     'kernel_size: 0 } }', "kernel must be positive"),
    ('layer { name: "c" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { '
     'axis: 9 } }', "axis 9 out of range"),
    ('layer { name: "c" type: "Reshape" bottom: "data" top: "c" reshape_param { shape { '
     'dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 } } }', "copies (0) an axis the bottom lacks"),
])
def test_explain_validates_divisors_and_indices(text, says):
    from netgen.errors import FcnkitError
    from netgen.explain import explain
    from netgen.schema import parse_prototxt
    from netgen.proto import caffe_pb2

    head = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 '
            'dim: 3 dim: 8 dim: 8 } } }\n')
    net = parse_prototxt(head + text, caffe_pb2.NetParameter)
    if says is None:
        assert "c" in explain(net, (8, 8))
        return
    with pytest.raises(FcnkitError, match=re_escape(says)):
        explain(net, (8, 8))


@pytest.mark.parametrize("size", [8, 12, 14, 40])
def test_hdf5_truncated_superblock(tmp_path, size):
    """Found by the long fuzz run: a file cut inside its superblock."""
    from netgen.errors import FcnkitError
    from surgery.caffemodel import load_weights, save_weights

    save_weights(tmp_path / "w.h5", _hdf5_seed_weights(), format="hdf5")
    cut = tmp_path / "cut.caffemodel.h5"
    cut.write_bytes((tmp_path / "w.h5").read_bytes()[:size])
    with pytest.raises(FcnkitError, match="truncated"):
        load_weights(cut)


def _hdf5_seed_weights():
    from surgery.caffemodel import Weights

    return Weights([("conv", [np.ones((2, 3), np.float32)])])


@pytest.mark.parametrize("mode,rgb", [("I;16", None), ("F", None), ("I", None), ("CMYK", "ok"),
                                      ("LA", "ok"), ("1", "ok"), ("YCbCr", "ok")])
def test_odd_image_modes(tmp_path, mode, rgb):
    """Modes that convert to RGB are read; 16-bit and float ones (clipped by PIL) refused."""
    from PIL import Image

    from netgen.errors import FcnkitError
    from solvers.data.readers import read_index_png, read_rgb

    path = tmp_path / ("a.tif" if mode in ("F", "I", "CMYK", "YCbCr") else "a.png")
    image = Image.new(mode, (6, 5))
    image.save(path)
    if rgb:
        assert read_rgb(path).shape == (5, 6, 3)
    else:
        with pytest.raises(FcnkitError, match="16-bit or float"):
            read_rgb(path)
    with pytest.raises(FcnkitError, match="expected palette indices"):
        read_index_png(path)


def test_truncated_label_is_one_error(tmp_path):
    from PIL import Image

    from netgen.errors import FcnkitError
    from solvers.data.readers import read_index_png

    path = tmp_path / "label.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 21, (64, 64), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FcnkitError, match="label .*label.png cannot be read as an image"):
        read_index_png(path)


def test_hdf5_compact_dataset_loads(tmp_path):
    """Compact layout keeps the values in the object header (no file offset): still read."""
    import h5py

    from surgery.caffemodel import load_weights

    path = tmp_path / "w.caffemodel.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("data/conv")
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        dataset = h5py.h5d.create(group.id, b"0", h5py.h5t.IEEE_F32LE,
                                  h5py.h5s.create_simple((3,)), dcpl=dcpl)
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(3, dtype=np.float32))
    assert load_weights(path)["conv"][0].tolist() == [0.0, 1.0, 2.0]
