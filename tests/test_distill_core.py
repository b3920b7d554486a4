"""Dataset distillation: size, balance, determinism, the matching objective, both methods."""

import numpy as np
import pytest

from tinycil.learn.distill import (
    DistillError,
    class_allocation,
    distill_task,
    matching_loss,
    random_subset,
    synthetic_size,
)


@pytest.fixture(scope="module")
def digits3():
    """Three classes of the real 8x8 handwritten digits, as images in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.isin(d.target, [3, 5, 8])
    x = (d.images[keep] / 16.0).astype(np.float32)[..., None]
    return x, d.target[keep].astype(np.int64)


def test_size_and_class_balance_rules():
    y = np.array([0] * 500 + [1] * 300 + [2] * 200)
    assert synthetic_size(1000, 0.01, 3) == 10
    assert synthetic_size(100, 0.01, 3) == 3  # at least one per class
    alloc = class_allocation(y, 10)
    assert sum(alloc.values()) == 10 and alloc == {0: 4, 1: 3, 2: 3}
    assert class_allocation(y, 3) == {0: 1, 1: 1, 2: 1}
    # A class never gets more than it has.
    assert class_allocation(np.array([0] * 50 + [1] * 2), 10) == {0: 5, 1: 2}


def test_random_subset_is_real_balanced_and_seeded(digits3):
    x, y = digits3
    xr, yr = random_subset(x, y, 12, seed=1)
    assert xr.shape == (12, 8, 8, 1) and sorted(np.unique(yr, return_counts=True)[1]) == [4, 4, 4]
    flat = x.reshape(len(x), -1)
    for sample in xr.reshape(12, -1):
        assert np.any(np.all(flat == sample, axis=1))
    assert np.array_equal(xr, random_subset(x, y, 12, seed=1)[0])
    assert not np.array_equal(xr, random_subset(x, y, 12, seed=2)[0])


@pytest.mark.slow
def test_dm_size_balance_and_one_per_class_minimum(digits3):
    x, y = digits3
    ds = distill_task(x, y, fraction=0.05, iterations=3, progress=False)
    n = round(0.05 * len(x))
    assert ds.x.shape == (n, 8, 8, 1) and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    counts = np.unique(ds.y, return_counts=True)[1]
    assert counts.max() - counts.min() <= 1
    assert ds.meta["method"] == "dm" and ds.meta["iterations"] == 3 and ds.meta["seconds"] > 0
    assert ds.y_soft is None
    tiny = distill_task(x, y, fraction=0.001, iterations=2, progress=False)
    assert sorted(tiny.y.tolist()) == [3, 5, 8]  # fraction * n = 0.5 < 3 classes


@pytest.mark.slow
def test_same_seed_same_synthetic_set(digits3):
    x, y = digits3
    a = distill_task(x, y, fraction=0.03, iterations=6, seed=7, progress=False)
    b = distill_task(x, y, fraction=0.03, iterations=6, seed=7, progress=False)
    c = distill_task(x, y, fraction=0.03, iterations=6, seed=8, progress=False)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert a.meta["mean_abs_change"] > 0  # it did move away from the real initialisation


@pytest.mark.slow
def test_dm_decreases_its_matching_loss_and_stays_in_range(digits3):
    x, y = digits3
    start = distill_task(x, y, fraction=0.03, iterations=0, seed=0, progress=False)
    ds = distill_task(x, y, fraction=0.03, iterations=80, seed=0, lr=0.02, progress=False)
    # iterations=0 returns the real samples the distillation starts from.
    assert np.array_equal(start.x, random_subset(x, y, len(start), seed=0)[0])
    before = matching_loss(x, y, start.x, start.y, seed=123)
    after = matching_loss(x, y, ds.x, ds.y, seed=123)  # networks the run never saw
    assert after < 0.7 * before, (before, after)
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0


@pytest.mark.slow
def test_dm_on_signals_and_flat_vectors_stays_in_the_data_range():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    sig = (rng.normal(size=(200, 32, 3)) + y[:, None, None] * 0.5).astype(np.float32)
    ds = distill_task(sig, y, fraction=0.05, iterations=30, lr=0.2, progress=False)
    assert ds.x.shape == (10, 32, 3)
    assert ds.x.min() >= sig.min() and ds.x.max() <= sig.max()
    flat = rng.uniform(-2, 3, size=(200, 20)).astype(np.float32)
    ds = distill_task(flat, y, fraction=0.05, iterations=30, lr=0.5, progress=False)
    assert ds.x.shape == (10, 20) and ds.x.min() >= -2 and ds.x.max() <= 3
    assert ds.meta["mean_abs_change"] > 0


@pytest.mark.slow
def test_gm_runs_and_moves_the_samples(digits3):
    x, y = digits3
    ds = distill_task(
        x, y, fraction=0.03, method="gm", iterations=2, inner_steps=2, seed=0, progress=False
    )
    start = random_subset(x, y, len(ds), seed=0)[0]
    assert ds.x.shape == start.shape and ds.meta["method"] == "gm"
    assert ds.meta["inner_steps"] == 2 and np.isfinite(ds.meta["loss_last"])
    assert not np.array_equal(ds.x, start)
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0


@pytest.mark.slow
def test_soft_labels_from_a_teacher_sum_to_one(digits3):
    import keras

    x, y = digits3
    teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    ds = distill_task(x, y, fraction=0.02, iterations=2, teacher=teacher, temperature=2.0, progress=False)
    assert ds.y_soft.shape == (len(ds), 10) and ds.y_soft.dtype == np.float32
    np.testing.assert_allclose(ds.y_soft.sum(axis=1), 1.0, atol=1e-5)
    logits = np.asarray(teacher(ds.x))
    assert np.array_equal(ds.y_soft.argmax(1), logits.argmax(1))


def test_bad_arguments_say_what_to_do(digits3):
    x, y = digits3
    with pytest.raises(DistillError, match="use one of"):
        distill_task(x, y, method="kmeans")
    with pytest.raises(DistillError, match=r"\(0, 1\]"):
        distill_task(x, y, fraction=1.5)
    with pytest.raises(DistillError, match="shape"):
        distill_task(x, y[:-1])
