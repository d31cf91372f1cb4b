"""surgery.fillers: Caffe's filler formulas, statistics, seeding and errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from netgen.errors import FcnkitError
from surgery.fillers import Filler, bilinear_kernel, fill

N = (400, 50, 3, 3)  # 180k values: sample statistics within ~1%


def test_constant_default_is_zero_and_value():
    assert not fill(None, (3, 4)).any()
    out = fill(Filler(type="constant", value=3.5), (2, 3))
    assert out.dtype == np.float32 and (out == 3.5).all()


def test_uniform_range_and_mean():
    out = fill(Filler(type="uniform", min=-2, max=5), N)
    assert out.min() >= -2 and out.max() < 5
    assert abs(out.mean() - 1.5) < 0.03


def test_gaussian_mean_std():
    out = fill(Filler(type="gaussian", mean=1.0, std=0.5), N)
    assert abs(out.mean() - 1.0) < 0.01 and abs(out.std() - 0.5) / 0.5 < 0.01


def test_gaussian_sparse_keeps_sparse_over_num_outputs():
    out = fill(Filler(type="gaussian", std=1, sparse=10), (100, 2000))
    assert abs((out != 0).mean() - 10 / 100) < 0.005


@pytest.mark.parametrize("norm, n", [(Filler.FAN_IN, 50 * 9), (Filler.FAN_OUT, 400 * 9),
                                     (Filler.AVERAGE, (50 * 9 + 400 * 9) / 2)])
def test_xavier_and_msra_variance_norm(norm, n):
    """fan_in = count / num, fan_out = count / channels, as caffe/filler.hpp."""
    xavier = fill(Filler(type="xavier", variance_norm=norm), N)
    scale = math.sqrt(3 / n)
    assert np.abs(xavier).max() <= scale and np.abs(xavier).max() > 0.99 * scale
    assert abs(xavier.std() - scale / math.sqrt(3)) / (scale / math.sqrt(3)) < 0.01
    msra = fill(Filler(type="msra", variance_norm=norm), N)
    assert abs(msra.mean()) < 0.01 * math.sqrt(2 / n)
    assert abs(msra.std() - math.sqrt(2 / n)) / math.sqrt(2 / n) < 0.01


def test_fans_of_low_rank_blobs():
    """A 1-d blob has num = count and channels = 1 (Caffe's LegacyShape)."""
    out = fill(Filler(type="xavier", variance_norm=Filler.FAN_OUT), (30000,))
    scale = math.sqrt(3 / 30000)
    assert np.abs(out).max() <= scale


def test_positive_unitball_rows_sum_to_one():
    out = fill(Filler(type="positive_unitball"), (7, 5, 2))
    assert (out >= 0).all()
    np.testing.assert_allclose(out.reshape(7, -1).sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7, 16, 63, 64])
def test_bilinear_matches_caffe_index_formula(size):
    """Caffe (filler.hpp at master, since 888597e; test_filler.cpp TestFillOdd K=7,
    TestFillEven K=6) fills element i with x = i % w, y = (i / w) % h, f = ceil(w/2),
    c = (w - 1) / (2f): (1 - |x/f - c|) (1 - |y/f - c|)."""
    shape = (3, 2, size, size)
    out = fill(Filler(type="bilinear"), shape).reshape(-1)
    f = math.ceil(size / 2)
    c = (size - 1) / (2 * f)
    for i in range(0, out.size, max(1, out.size // 500)):
        x, y = i % size, (i // size) % size
        assert out[i] == pytest.approx((1 - abs(x / f - c)) * (1 - abs(y / f - c)), abs=1e-6)
    assert np.array_equal(bilinear_kernel(size), out[:size * size].reshape(size, size))


def test_seeding():
    a = fill(Filler(type="gaussian"), (10, 10), 7)
    assert np.array_equal(a, fill(Filler(type="gaussian"), (10, 10), 7))
    assert not np.array_equal(a, fill(Filler(type="gaussian"), (10, 10), 8))
    rng = np.random.default_rng(7)
    assert np.array_equal(a, fill(Filler(type="gaussian"), (10, 10), rng))


def test_errors():
    with pytest.raises(FcnkitError, match="unknown filler type 'he'"):
        fill(Filler(type="he"), (2, 2))
    with pytest.raises(FcnkitError, match="square"):
        fill(Filler(type="bilinear"), (1, 1, 4, 3))
    with pytest.raises(FcnkitError, match="4-d"):
        fill(Filler(type="bilinear"), (4, 4))
    with pytest.raises(FcnkitError, match="does not support sparse"):
        fill(Filler(type="uniform", sparse=3), (4, 4))
