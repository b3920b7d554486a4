"""The Dataset record, its error type and the preprocessing every loader shares.

Loaders return raw data (images in [0, 1], signals and MFCCs not yet standardised); `finish`
applies the steps the registry promises: stratified subsets, resize, standardisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

MODALITIES = ("image", "inertial", "audio")


class DatasetError(Exception):
    """A data set is missing, malformed or asked for something it cannot do."""


@dataclass
class Dataset:
    name: str
    modality: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    # Where the data came from and the preprocessing applied (e.g. standardisation mean/std),
    # so that new samples from the same source can be prepared the same way later.
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check(self) -> "Dataset":
        """Enforce the contract: float32 channels-last samples, int64 labels in range."""
        if self.modality not in MODALITIES:
            raise DatasetError(f"{self.name}: unknown modality {self.modality!r}")
        for part in ("train", "test"):
            x = getattr(self, f"x_{part}")
            y = getattr(self, f"y_{part}")
            if x.dtype != np.float32 or y.dtype != np.int64:
                raise DatasetError(f"{self.name}: {part} arrays must be float32/int64, "
                                   f"got {x.dtype}/{y.dtype}")
            if len(x) != len(y):
                raise DatasetError(f"{self.name}: {len(x)} {part} samples but {len(y)} labels")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise DatasetError(f"{self.name}: {part} labels outside 0..{self.num_classes - 1}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(f"{self.name}: train samples {self.x_train.shape[1:]} and test "
                               f"samples {self.x_test.shape[1:]} differ in shape")
        return self


def missing(name: str, looked_for: Iterable[Path | str], layout: str, hint: str = "") -> DatasetError:
    """The one message format for 'not found': what was looked for and what is expected."""
    paths = "\n".join(f"  {p}" for p in looked_for)
    text = f"{name}: data set not found. Looked for:\n{paths}\nExpected layout:\n{layout.rstrip()}"
    if hint:
        text += f"\n{hint}"
    return DatasetError(text)


def malformed(name: str, path: Path | str, problem: str, layout: str) -> DatasetError:
    return DatasetError(f"{name}: {path} is malformed: {problem}\nExpected layout:\n{layout.rstrip()}")


def require_dir(name: str, data_dir, layout: str) -> Path:
    if data_dir is None:
        raise DatasetError(f"{name}: needs --data-dir pointing at the data set on disk.\n"
                           f"Expected layout:\n{layout.rstrip()}")
    path = Path(data_dir).expanduser().resolve()  # absolute, so messages say where we looked
    if not path.exists():
        raise missing(name, [path], layout)
    return path


# ----------------------------------------------------------------------------- splits/subsets

def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each class split in the same proportion; sorted, deterministic."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def stratified_subset(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `n` samples keeping the class proportions (all when n is None or large).

    Largest-remainder allocation, and at least one sample per class when n allows it, so a small
    subset never loses a class.
    """
    y = np.asarray(y)
    if n is None or n >= len(y):
        return np.arange(len(y))
    if n <= 0:
        raise DatasetError(f"a subset size must be positive, got {n}")
    classes, counts = np.unique(y, return_counts=True)
    share = counts * (n / len(y))
    take = np.floor(share).astype(int)
    if n >= len(classes):
        take = np.maximum(take, 1)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    i = 0
    while take.sum() < n:
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > n:  # only when the at-least-one rule overshot
        c = int(np.argmax(take))
        take[c] -= 1
    rng = np.random.default_rng(seed)
    picked = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(y == c)
        picked.append(rng.choice(idx, size=int(k), replace=False))
    return np.sort(np.concatenate(picked))


# ----------------------------------------------------------------------------- resize

def parse_size(resize) -> tuple[int, int] | None:
    if resize is None:
        return None
    if isinstance(resize, int):
        resize = (resize, resize)
    if isinstance(resize, str):
        parts = resize.lower().replace("x", ",").split(",")
        try:
            resize = tuple(int(p) for p in parts if p.strip())
        except ValueError:
            raise DatasetError(f"resize must look like 14x14, got {resize!r}") from None
    resize = tuple(int(v) for v in resize)
    if len(resize) != 2 or min(resize) < 1:
        raise DatasetError(f"resize must be (height, width) with positive sizes, got {resize!r}")
    return resize


def resize_images(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (N, H, W, C) images to size=(h, w).

    Integer down-scaling averages each block exactly (what a board-side pooling would do);
    any other size goes through tf.image.resize with antialiasing.
    """
    h, w = int(size[0]), int(size[1])
    n, H, W, C = x.shape
    if (H, W) == (h, w):
        return x.astype(np.float32, copy=False)
    if H % h == 0 and W % w == 0:
        fh, fw = H // h, W // w
        blocks = x.reshape(n, h, fh, w, fw, C).astype(np.float32)
        return blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)
    import tensorflow as tf

    out = []
    for start in range(0, n, 4096):  # bounded memory for large sets
        chunk = tf.image.resize(x[start:start + 4096].astype(np.float32), (h, w),
                                method="bilinear", antialias=True)
        out.append(np.clip(chunk.numpy(), 0.0, 1.0))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, h, w, C), np.float32)


# ----------------------------------------------------------------------------- standardise

def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Zero mean, unit variance per channel (last axis), with the training set's statistics."""
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    f = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return f(x_train), f(x_test), {"mean": mean.astype(np.float32).tolist(),
                                   "std": std.astype(np.float32).tolist()}


def finish(ds: Dataset, *, resize=None, seed: int = 0, max_train: int | None = None,
           max_test: int | None = None) -> Dataset:
    """Subset, resize and standardise a raw loader result; then check the contract."""
    size = parse_size(resize)
    if size is not None and ds.modality != "image":
        raise DatasetError(f"{ds.name}: resize applies to image data sets only "
                           f"({ds.name} is {ds.modality}); leave resize unset")
    tr = stratified_subset(ds.y_train, max_train, seed)
    te = stratified_subset(ds.y_test, max_test, seed + 1)
    if len(tr) != len(ds.y_train):
        ds.x_train, ds.y_train = ds.x_train[tr], ds.y_train[tr]
    if len(te) != len(ds.y_test):
        ds.x_test, ds.y_test = ds.x_test[te], ds.y_test[te]
    if size is not None and tuple(ds.x_train.shape[1:3]) != size:
        ds.meta["resized_from"] = list(ds.x_train.shape[1:3])
        ds.x_train = resize_images(ds.x_train, size)
        ds.x_test = resize_images(ds.x_test, size)
    if ds.modality in ("inertial", "audio") and not ds.meta.get("standardised"):
        ds.x_train, ds.x_test, stats = standardise(ds.x_train, ds.x_test)
        ds.meta["standardised"] = stats
    ds.x_train = np.ascontiguousarray(ds.x_train, dtype=np.float32)
    ds.x_test = np.ascontiguousarray(ds.x_test, dtype=np.float32)
    ds.y_train = np.asarray(ds.y_train, dtype=np.int64)
    ds.y_test = np.asarray(ds.y_test, dtype=np.int64)
    return ds.check()


def to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return (x.astype(np.float32) / np.float32(255.0))
