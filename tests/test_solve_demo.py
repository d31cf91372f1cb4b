"""The demo's model folders are netgen output as is: the scratch recipe, the VOC-layout data and
the stage's solver values, each folder reproduced byte for byte by the command in its header."""
import ast
import shlex

import pytest

from netgen.cli import main
from netgen.proto import caffe_pb2
from netgen.schema import read_net, read_solver
from solvers.demo import DemoConfig

from solve_helpers import tiny_models


def test_demo_folders_are_what_their_netgen_command_writes(tmp_path):
    config = DemoConfig(train=4, val=3, size=32, batch=2, seed=5, input_scale=0.125)
    solvers = tiny_models(tmp_path / "demo", iters=(4, 2, 0), config=config)
    assert [s.parent.name for s in solvers] == [f"synthetic-fcn{s}" for s in ("32s", "16s", "8s")]
    for solver, iters in zip(solvers, (4, 2, 1)):  # a 0-iteration stage still gets a snapshot
        folder = solver.parent
        files = {f.name: f.read_bytes() for f in folder.iterdir()}
        command = files["solver.prototxt"].decode("utf-8").splitlines()[1]
        assert "--recipe scratch" in command
        argv = shlex.split(command.split("python -m netgen ", 1)[1])
        assert main([*argv, "--out", str(tmp_path / "again")]) == 0
        again = tmp_path / "again" / folder.name
        assert {f.name: f.read_bytes() for f in again.iterdir()} == files

        s = read_solver(solver)
        assert (s.type, s.max_iter, s.snapshot, list(s.test_iter), s.random_seed) == (
            "Adam", iters, iters, [3], 5)
        assert s.base_lr == pytest.approx(config.base_lr[0])
        train = {l.name: l for l in read_net(folder / "train.prototxt").layer}
        assert train["data_scale"].scale_param.filler.value == pytest.approx(0.125)
        assert train["loss"].loss_param.normalization == caffe_pb2.LossParameter.VALID
        assert "drop6" not in train
        for phase, batch in (("train", 2), ("val", 1)):
            source = read_net(folder / f"{phase}.prototxt").layer[0]
            params = ast.literal_eval(source.python_param.param_str)
            assert source.python_param.layer == "VOCSegDataLayer"
            assert (params["voc_dir"], params["split"], params["seed"], params["batch_size"]) == (
                "../../data", phase, 5, batch)
        deploy = read_net(folder / "deploy.prototxt")
        assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 32, 32]
