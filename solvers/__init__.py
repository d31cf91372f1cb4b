"""fcnkit's training and inference: pycaffe and PyTorch-engine backends, data layers, scoring.

Importing it makes idle OpenMP threads sleep rather than spin (OMP_WAIT_POLICY=PASSIVE unless
the environment sets a policy). torch's CPU ops run on libgomp teams; with the default policy
a thread that finished its share spins waiting for a teammate, and when other processes hold
the cores that teammate is descheduled, so each of the thousands of parallel regions in an
FCN pass costs a scheduler time slice: on 2 shared cores a VGG fwd+bwd ran ~7x slower than
with sleeping waits (bench/bench_engine.py, section `load`). libgomp reads the variable once,
when torch first loads, so it only takes effect when fcnkit is imported before torch.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
