"""CIFAR-10 in its "python version" layout: pickled batches written by Python 2.

Each batch is a dict with bytes keys: b'data' a (10000, 3072) uint8 array, one row per image,
channel-major (1024 red, 1024 green, 1024 blue, each row-major 32x32), and b'labels' a list of
ints 0..9. batches.meta holds b'label_names'.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .common import Dataset, DatasetError, malformed, missing, require_dir, to_unit

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]

LAYOUT = """\
  <data-dir>/cifar-10-batches-py/   (or <data-dir> itself)
      data_batch_1 ... data_batch_5   pickled dicts: b'data' (10000, 3072) uint8, b'labels'
      test_batch                      the same, 10000 test images
      batches.meta                    b'label_names' (optional)"""


def _folder(data_dir) -> Path:
    root = require_dir("cifar10", data_dir, LAYOUT)
    for folder in (root / "cifar-10-batches-py", root):
        if (folder / TEST_BATCH).is_file() or (folder / TRAIN_BATCHES[0]).is_file():
            return folder
    raise missing("cifar10", [root / "cifar-10-batches-py" / TEST_BATCH, root / TEST_BATCH],
                  LAYOUT)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the batches were pickled by Python 2, keys stay bytes
            obj = pickle.load(f, encoding="bytes")
    except Exception as e:  # truncated or foreign files raise several exception types
        raise malformed("cifar10", path, f"not a readable pickle ({type(e).__name__}: {e})",
                        LAYOUT) from None
    if not isinstance(obj, dict):
        raise malformed("cifar10", path, f"holds a {type(obj).__name__}, expected a dict", LAYOUT)
    return obj


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise malformed("cifar10", path, f"keys {sorted(map(repr, batch))} lack b'data' and "
                        f"b'labels'", LAYOUT)
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise malformed("cifar10", path, f"b'data' is {data.dtype} {data.shape}, expected "
                        f"uint8 (N, 3072)", LAYOUT)
    if labels.shape != (len(data),):
        raise malformed("cifar10", path, f"{len(data)} images but {labels.shape} labels", LAYOUT)
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise malformed("cifar10", path, "labels must be 0..9", LAYOUT)
    # channel-major rows -> (N, 32, 32, 3)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def load_cifar10(data_dir=None, **_) -> Dataset:
    folder = _folder(data_dir)
    wanted = [folder / b for b in TRAIN_BATCHES + [TEST_BATCH]]
    absent = [p for p in wanted if not p.is_file()]
    if absent:
        raise missing("cifar10", absent, LAYOUT)
    train = [_read_batch(p) for p in wanted[:-1]]
    xte, yte = _read_batch(wanted[-1])
    names = CLASSES
    if (folder / META).is_file():
        meta = _unpickle(folder / META)
        raw = meta.get(b"label_names", meta.get("label_names"))
        if raw is not None:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
            if len(names) != 10:
                raise malformed("cifar10", folder / META, f"{len(names)} label names, expected 10",
                                LAYOUT)
    xtr = np.concatenate([x for x, _ in train])
    ytr = np.concatenate([y for _, y in train])
    if len(xtr) == 0:
        raise DatasetError(f"cifar10: the training batches in {folder} hold no images")
    return Dataset(name="cifar10", modality="image", x_train=to_unit(xtr), y_train=ytr,
                   x_test=to_unit(xte), y_test=yte, class_names=names,
                   meta={"source": str(folder)})
