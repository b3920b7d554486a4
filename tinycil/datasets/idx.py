"""MNIST-style data: IDX files (gzip or plain) and Keras' mnist.npz.

IDX: a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the data in C order, big-endian. Images are 0x00000803 (uint8,
3 dims), labels 0x00000801 (uint8, 1 dim).
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from .common import Dataset, DatasetError, malformed, missing, require_dir, to_unit

# type code -> big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(d) for d in range(10)]

# The four files in the order x_train, y_train, x_test, y_test; each also accepted with a dot
# before "idx" (another common spelling) and with or without .gz.
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

IDX_LAYOUT = """\
  <data-dir>/train-images-idx3-ubyte[.gz]   IDX, magic 0x00000803, N x 28 x 28 uint8
  <data-dir>/train-labels-idx1-ubyte[.gz]   IDX, magic 0x00000801, N uint8 labels 0..9
  <data-dir>/t10k-images-idx3-ubyte[.gz]
  <data-dir>/t10k-labels-idx1-ubyte[.gz]"""

MNIST_LAYOUT = IDX_LAYOUT + """
or
  <data-dir>/mnist.npz   (Keras: arrays x_train, y_train, x_test, y_test)"""


def read_idx(path: Path | str, name: str = "idx", layout: str = IDX_LAYOUT) -> np.ndarray:
    """Read one IDX file (gzip detected from its first bytes); validates magic and length."""
    path = Path(path)
    stat = path.stat()
    return _read_idx_cached(str(path), stat.st_mtime_ns, stat.st_size, name, layout)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, _mtime: int, _size: int, name: str, layout: str) -> np.ndarray:
    # Cached per file version: several parts of a run (and the tests) load the same set again.
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise malformed(name, path, f"broken gzip stream ({e})", layout) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise malformed(name, path, f"not an IDX file (magic bytes {raw[:4].hex() or 'none'})",
                        layout)
    dtype = np.dtype(IDX_TYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise malformed(name, path, "IDX header truncated", layout)
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise malformed(name, path, f"header says {shape} ({expected} bytes of data) but the "
                        f"file holds {len(raw) - header} bytes (truncated?)", layout)
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    data = data.astype(dtype.newbyteorder("="))
    data.flags.writeable = False
    return data


def find_idx_files(folder: Path) -> tuple[list[Path] | None, list[Path]]:
    """The four IDX files in `folder` (None if any is missing) and every path tried."""
    found, tried = [], []
    for stem in IDX_STEMS:
        dotted = stem.replace("-idx", ".idx")
        candidates = [folder / f"{s}{ext}" for s in (stem, dotted) for ext in ("", ".gz")]
        tried.extend(candidates)
        hit = next((c for c in candidates if c.is_file()), None)
        found.append(hit)
    return (found if all(found) else None), tried


def load_idx_set(name: str, folder: Path, class_names: list[str], layout: str,
                 hint: str = "") -> Dataset:
    files, tried = find_idx_files(folder)
    if files is None:
        raise missing(name, tried, layout, hint)
    xtr, ytr, xte, yte = (read_idx(f, name, layout) for f in files)
    return _images_dataset(name, (xtr, ytr, xte, yte), class_names, files, layout)


def _images_dataset(name, arrays, class_names, sources, layout) -> Dataset:
    xtr, ytr, xte, yte = arrays
    for x, y, src in ((xtr, ytr, sources[0]), (xte, yte, sources[-1])):
        if x.ndim != 3:
            raise malformed(name, src, f"images must be N x H x W, got shape {x.shape}", layout)
        if y.ndim != 1 or len(y) != len(x):
            raise malformed(name, src, f"{len(x)} images but labels of shape {y.shape}", layout)
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise malformed(name, src, f"labels must be 0..{len(class_names) - 1}, "
                            f"found {y.min()}..{y.max()}", layout)
    def scale(a):
        # pixels stored as 0..255 (uint8 or otherwise) become [0, 1]
        if a.dtype == np.uint8 or (a.size and a.max() > 1.0):
            return to_unit(a)
        return a.astype(np.float32)

    return Dataset(name=name, modality="image",
                   x_train=scale(xtr)[..., None], y_train=ytr.astype(np.int64),
                   x_test=scale(xte)[..., None], y_test=yte.astype(np.int64),
                   class_names=list(class_names),
                   meta={"source": [str(s) for s in sources]})


def load_fashion_mnist(data_dir=None, **_) -> Dataset:
    hint = ""
    if data_dir is None:
        folder = DEBIAN_FASHION_DIR
        hint = ("Install the Debian package: sudo apt-get install dataset-fashion-mnist "
                "(or pass --data-dir with the four IDX files).")
    else:
        folder = require_dir("fashion-mnist", data_dir, IDX_LAYOUT)
    return load_idx_set("fashion-mnist", folder, FASHION_CLASSES, IDX_LAYOUT, hint)


def load_mnist(data_dir=None, **_) -> Dataset:
    path = require_dir("mnist", data_dir, MNIST_LAYOUT)
    npz = path if path.is_file() else path / "mnist.npz"
    if npz.is_file():
        return _load_mnist_npz(npz)
    files, tried = find_idx_files(path)
    if files is None:
        raise missing("mnist", tried + [npz], MNIST_LAYOUT)
    return load_idx_set("mnist", path, DIGIT_CLASSES, MNIST_LAYOUT)


def _load_mnist_npz(npz: Path) -> Dataset:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(npz, allow_pickle=False) as f:
            absent = [k for k in keys if k not in f.files]
            if absent:
                raise malformed("mnist", npz, f"missing arrays {absent} (has {f.files})",
                                MNIST_LAYOUT)
            arrays = tuple(f[k] for k in keys)
    except DatasetError:
        raise
    except Exception as e:  # zip/npy damage surfaces as several exception types
        raise malformed("mnist", npz, f"cannot read it as .npz ({e})", MNIST_LAYOUT) from None
    return _images_dataset("mnist", arrays, DIGIT_CLASSES, [npz], MNIST_LAYOUT)
