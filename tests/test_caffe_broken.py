"""A broken pycaffe never breaks the torch backend (issue 8, item 6).

`import caffe` can fail with other than ImportError: a `_caffe.so` built against numpy 1.x,
imported under numpy 2, raises SystemError. Here a `caffe` package on PYTHONPATH whose import
raises SystemError stands for such a broken install (nothing of Caffe's behaviour is imitated:
it only fails to import). `--backend torch` and `auto` must train and infer as without Caffe;
`--backend caffe` must say what is wrong in one line, naming the package, and exit 2.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import solve
from solvers import backends, caffe_backend, torch_backend
from solvers.engine import Net

from solve_helpers import ROOT, one_thread, tiny_models

# what a numpy-1 _caffe.so raises under numpy 2 (seen with BVLC Caffe master 9b89154)
BROKEN = "raise SystemError('initialization of _caffe raised unreported exception')\n"


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """(model folder, PYTHONPATH with the broken `caffe` package first)."""
    folder = tmp_path_factory.mktemp("broken")
    (folder / "site" / "caffe").mkdir(parents=True)
    (folder / "site" / "caffe" / "__init__.py").write_text(BROKEN)
    with one_thread():
        model = tiny_models(folder / "work", iters=(1, 1, 1))[0].parent
    return model, os.pathsep.join([str(folder / "site"), str(ROOT)])


def _run(script: str, *args: str, path: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _copy(model: Path, tmp_path: Path) -> Path:
    """A private copy of the model folder (its data paths are relative to the models/ folder)."""
    shutil.copytree(model.parent.parent, tmp_path / "work")
    return tmp_path / "work" / model.parent.name / model.name


@pytest.fixture()
def broken_here(broken, monkeypatch):
    """The broken package first on this process's sys.path, pycaffe's import probe reset (and
    reset again afterwards, so other tests see this process's real state)."""
    model, path = broken
    monkeypatch.syspath_prepend(path.split(os.pathsep)[0])
    for name in [m for m in sys.modules if m == "caffe" or m.startswith("caffe.")]:
        monkeypatch.delitem(sys.modules, name)
    caffe_backend._probe.cache_clear()
    yield model
    caffe_backend._probe.cache_clear()


def test_caffe_backend_names_the_broken_install(broken_here, capsys):
    before = set(broken_here.rglob("*"))
    with pytest.raises(SystemExit) as e:
        solve.main([str(broken_here), "--backend", "caffe", "--quiet"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: backend 'caffe' needs pycaffe: pycaffe at ")
    assert f"{os.sep}caffe{os.sep}__init__.py is broken (SystemError: " in lines[0]
    assert lines[0].endswith("or use --backend torch")
    assert set(broken_here.rglob("*")) == before


def test_torch_and_auto_pick_the_engine(broken_here):
    assert backends.resolve("torch") is torch_backend
    assert backends.resolve("auto") is torch_backend
    assert caffe_backend.pycaffe() is None and not caffe_backend.available()


def test_auto_trains_despite_it(broken, tmp_path):
    """A fresh process, where fcnkit's data layers also probe pycaffe when imported."""
    model, path = broken
    model = _copy(model, tmp_path)
    proc = _run("solve.py", str(model), "--backend", "auto", "--iters", "1",
                "--test-every", "0", "--quiet", path=path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "iter 1 (torch," in proc.stdout
    assert (model / "snapshot" / "train_iter_1.caffemodel").is_file()


def test_infer_torch_despite_it(broken, tmp_path):
    model, path = broken
    weights = tmp_path / "w.caffemodel"
    with one_thread():
        Net(str(model / "deploy.prototxt"), "TEST").save(weights)
    image = next((broken[0].parent.parent / "data" / "JPEGImages").glob("*.jpg"))
    proc = _run("infer.py", str(model / "deploy.prototxt"), str(weights), str(image), "-o",
                str(tmp_path / "out"), "--quiet", path=path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / f"{image.stem}.png").is_file()
