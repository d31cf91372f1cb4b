"""Turn a model preset into its four prototxt files and write them, all or nothing.

A model folder holds train.prototxt, val.prototxt, deploy.prototxt and solver.prototxt; the
solver names the nets relative to itself. Every file starts with a header saying it is
generated. All four texts are built before anything touches the disk, and the files are
written to temps that are renamed into place only once all four are complete; other files in
the folder (snapshots, logs) are left alone.
"""
from __future__ import annotations

import ast
import contextlib
import math
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import FcnkitError
from .fcn import ARCHITECTURES, DEFAULT_SIZE, Recipe
from .fileio import atomic_write
from .netspec import assign_proto
from .presets import DEFAULT_SET, Model, check_classes, resolve, resolve_recipe
from .proto import caffe_pb2
from .schema import to_prototxt

NET_FILES = {"train": "train.prototxt", "val": "val.prototxt", "deploy": "deploy.prototxt"}
SOLVER_FILE = "solver.prototxt"
DATA_MODES = ("python", "input")


def _positive(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value) and value > 0


def parse_value(text: str) -> Any:
    """A KEY=VALUE value: a Python literal (1, 1e-3, True, 'x', (64, 64)), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _cli_value(value: Any) -> str:
    """How a value is typed on the command line so that parse_value gives it back."""
    return value if isinstance(value, str) and parse_value(value) == value else repr(value)


def _check_pairs(flag: str, pairs: Mapping[str, Any]) -> None:
    for key, value in pairs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise FcnkitError(f"{flag}: key must be a name, not {key!r}")
        try:
            same = ast.literal_eval(repr(value)) == value
        except (ValueError, SyntaxError):
            same = False
        if not same:
            raise FcnkitError(f"{flag} {key}: value must be a plain literal, not {value!r}")


@dataclass(frozen=True)
class Options:
    """What `generate` may change from a preset's defaults (each is a CLI flag, see command)."""

    num_classes: int | None = None
    width: float = 1.0
    data: str = "python"
    recipe: str = "reference"
    input_scale: float | None = None    # replaces the recipe's input scale
    input_size: tuple[int, int] = DEFAULT_SIZE  # H, W of Input layers
    voc_dir: str | None = None          # train/val read this VOC-layout folder
    train_params: Mapping[str, Any] = field(default_factory=dict)  # param_str keys set
    val_params: Mapping[str, Any] = field(default_factory=dict)
    solver: Mapping[str, Any] = field(default_factory=dict)  # solver fields set last

    def check(self) -> None:
        if not _positive(self.width):
            raise FcnkitError(f"--width must be a positive number, not {self.width!r}")
        if self.data not in DATA_MODES:
            raise FcnkitError(f"--data must be one of {', '.join(DATA_MODES)}, not {self.data!r}")
        resolve_recipe(self.recipe)
        if self.input_scale is not None and not _positive(self.input_scale):
            raise FcnkitError(f"--input-scale must be a positive number, not "
                              f"{self.input_scale!r}")
        size = self.input_size
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in size):
            raise FcnkitError(f"--input-size must be two positive integers, not {size!r}")
        if self.voc_dir is not None and (not isinstance(self.voc_dir, str) or not self.voc_dir):
            raise FcnkitError(f"--voc-dir must be a folder path, not {self.voc_dir!r}")
        if self.data == "input" and (self.voc_dir is not None or self.train_params
                                     or self.val_params):
            raise FcnkitError("--voc-dir, --train-param and --val-param set data layers: "
                              "not with --data input")
        for flag, pairs in (("--train-param", self.train_params),
                            ("--val-param", self.val_params), ("--solver", self.solver)):
            _check_pairs(flag, pairs)

    def net_recipe(self) -> Recipe:
        """The recipe the nets and solver follow, with the input scale given here."""
        chosen = resolve_recipe(self.recipe)
        return chosen if self.input_scale is None else replace(chosen,
                                                               input_scale=self.input_scale)

    def command(self, name: str) -> str | None:
        """The `python -m netgen generate` line that reproduces non-default options, if any."""
        flags = []
        if self.num_classes is not None:
            flags.append(f"--classes {self.num_classes}")
        if self.width != 1.0:
            flags.append(f"--width {self.width:g}")
        if self.data != "python":
            flags.append(f"--data {self.data}")
        if self.recipe != "reference":
            flags.append(f"--recipe {self.recipe}")
        if self.input_scale is not None:
            flags.append(f"--input-scale {self.input_scale!r}")
        if tuple(self.input_size) != DEFAULT_SIZE:
            flags.append(f"--input-size {self.input_size[0]}x{self.input_size[1]}")
        if self.voc_dir is not None:
            flags.append(f"--voc-dir {shlex.quote(self.voc_dir)}")
        for flag, pairs in (("--train-param", self.train_params),
                            ("--val-param", self.val_params), ("--solver", self.solver)):
            flags += [f"{flag} {shlex.quote(f'{k}={_cli_value(v)}')}" for k, v in pairs.items()]
        return f"python -m netgen generate {name} {' '.join(flags)}" if flags else None


def header(name: str, options: Options) -> str:
    lines = [f"# generated by fcnkit netgen {name} — do not edit; regenerate with python -m netgen"]
    command = options.command(name)
    if command:
        lines.append(f"# options: {command}")
    return "\n".join(lines) + "\n"


def build_net(model: Model, phase: str, options: Options = Options()) -> caffe_pb2.NetParameter:
    """The model's net for `phase` ("train" | "val" | "deploy")."""
    net = model.net
    data = None
    if phase != "deploy" and options.data != "input":
        data = model.data_spec(phase, options.num_classes, options.voc_dir)
        extra = options.train_params if phase == "train" else options.val_params
        data = replace(data, params={**data.params, **extra})
    common = dict(data=data, width=options.width, heads=model.heads(options.num_classes),
                  input_size=tuple(options.input_size), recipe=options.net_recipe())
    if net.arch == "alexnet":
        (_, channels), = model.inputs
        return ARCHITECTURES["alexnet"](phase, net.stride, in_channels=channels, **common)
    return ARCHITECTURES["vgg16"](phase, net.stride, inputs=model.inputs, fusion=net.fusion,
                                  first_conv=net.first_conv, **common)


def build_solver(model: Model, options: Options = Options()) -> caffe_pb2.SolverParameter:
    """The solver of the options' recipe, reading train/val nets beside it."""
    solver = caffe_pb2.SolverParameter(train_net=NET_FILES["train"], test_net=[NET_FILES["val"]])
    for key, value in model.solver(options.net_recipe()).items():
        assign_proto(solver, key, value, "solver")
    for key, value in options.solver.items():
        if key in solver.DESCRIPTOR.fields_by_name:  # replace, not extend, repeated fields
            solver.ClearField(key)
        assign_proto(solver, key, value, "--solver")
    return solver


def render(model: Model, options: Options = Options()) -> dict[str, str]:
    """File name -> full text (header included) of the model's folder."""
    options.check()
    check_classes(model, options.num_classes)
    head = header(model.name, options)
    files = {fname: head + to_prototxt(build_net(model, phase, options))
             for phase, fname in NET_FILES.items()}
    files[SOLVER_FILE] = head + to_prototxt(build_solver(model, options))
    return files


def write_folder(folder: Path, files: dict[str, str]) -> None:
    """Write every file of `files` into `folder`, all or none."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FcnkitError(f"{folder}: cannot create folder: {e.strerror}") from None
    if not folder.is_dir():
        raise FcnkitError(f"{folder}: exists and is not a folder")
    blocked = [f for f in files if (folder / f).exists() and not (folder / f).is_file()]
    if blocked:  # checked first: a rename failing late would leave a mix of old and new files
        raise FcnkitError(f"{folder / blocked[0]}: exists and is not a file")
    try:
        with contextlib.ExitStack() as stack:  # renames happen on exit, only after all writes
            for fname, text in files.items():
                stack.enter_context(atomic_write(folder / fname, "wb")).write(text.encode("utf-8"))
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def generate(name: str, out_dir: str | os.PathLike = "models", num_classes: int | None = None,
             width: float = 1.0, *, dataset: str | None = None, data: str = "python",
             recipe: str = "reference", input_scale: float | None = None,
             input_size: tuple[int, int] = DEFAULT_SIZE, voc_dir: str | None = None,
             train_params: Mapping[str, Any] | None = None,
             val_params: Mapping[str, Any] | None = None,
             solver: Mapping[str, Any] | None = None) -> Path:
    """Write model `name` (e.g. "voc-fcn8s") into out_dir/<name>/ and return that folder.

    dataset: put the net on another dataset preset (the folder becomes <dataset>-<net>).
    num_classes / width: change the class count / scale hidden channels (header notes both).
    data: "python" (data layers) or "input" (train/val read Input layers for data and label).
    recipe: a name in presets.RECIPES ("reference", "scratch"); input_scale replaces its scale.
    input_size: H, W of the Input layers (deploy, and train/val with data="input").
    voc_dir: train/val read this VOC-layout folder (relative to the model folder).
    train_params / val_params: param_str keys set on the train / val data layer.
    solver: solver fields set after the recipe's (max_iter, base_lr, ...).
    Every non-default option is written into the header as the command that reproduces it.
    """
    model = resolve(name, dataset)
    options = Options(num_classes, width, data, recipe, input_scale, tuple(input_size), voc_dir,
                      dict(train_params or {}), dict(val_params or {}), dict(solver or {}))
    files = render(model, options)
    folder = Path(out_dir) / model.name
    write_folder(folder, files)
    return folder


def generate_all(out_dir: str | os.PathLike = "models",
                 names: Iterable[str] = DEFAULT_SET) -> list[Path]:
    """Write the default set (every published reference model and fcnkit's additions)."""
    rendered = {name: render(resolve(name)) for name in names}  # fail before writing any
    folders = [Path(out_dir) / name for name in rendered]
    for folder, files in zip(folders, rendered.values()):
        write_folder(folder, files)
    return folders
