"""CORe50: 50 household objects in 10 categories, filmed in 11 sessions (s1..s11).

Two on-disk layouts:
- npz: core50_imgs.npz (array x, (N, 128, 128, 3) uint8) with paths.pkl, the list of the N
  relative image paths ("s11/o1/C_11_01_000.png") in the same order; labels and sessions come
  from the paths.
- png: core50_128x128/s<session>/o<object>/*.png.
Object o belongs to category (o - 1) // 5. Sessions 3, 7 and 10 are the usual test sessions.
The full set is large (about 165k images), so subsets are chosen from the paths first and only the
chosen images are decoded and resized.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

from .common import (Dataset, DatasetError, malformed, missing, parse_size, require_dir,
                     resize_images, stratified_subset, to_unit)

CATEGORIES = ["plug_adapter", "mobile_phone", "scissors", "light_bulb", "can", "glasses", "ball",
              "marker", "cup", "remote_control"]
TEST_SESSIONS = (3, 7, 10)
DEFAULT_SIZE = (32, 32)
NUM_OBJECTS = 50

LAYOUT = """\
  npz layout:
    <data-dir>/core50_imgs.npz   array x: (N, 128, 128, 3) uint8
    <data-dir>/paths.pkl         list of N relative paths like s11/o1/C_11_01_000.png, same order
  or png layout:
    <data-dir>/core50_128x128/s1 ... s11/o1 ... o50/*.png   (or <data-dir>/s1 ... directly)
  object o belongs to category (o - 1) // 5; sessions 3, 7, 10 form the test set by default"""

_SESSION = re.compile(r"^s(\d+)$")
_OBJECT = re.compile(r"^o(\d+)$")


def _session_object(rel: str, where) -> tuple[int, int]:
    parts = re.split(r"[\\/]", str(rel))
    s = next((int(m.group(1)) for p in parts if (m := _SESSION.match(p))), None)
    o = next((int(m.group(1)) for p in parts if (m := _OBJECT.match(p))), None)
    if s is None or o is None or not 1 <= o <= NUM_OBJECTS:
        raise malformed("core50", where, f"path {rel!r} does not name a session sN and an object "
                        f"o1..o50", LAYOUT)
    return s, o


def _split_indices(sessions, labels, test_sessions, seed, max_train, max_test):
    sessions, labels = np.asarray(sessions), np.asarray(labels)
    is_test = np.isin(sessions, list(test_sessions))
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if not len(train) or not len(test):
        raise DatasetError(f"core50: sessions {sorted(set(sessions.tolist()))} give "
                           f"{len(train)} training and {len(test)} test images with test sessions "
                           f"{list(test_sessions)}\nExpected layout:\n{LAYOUT}")
    train = train[stratified_subset(labels[train], max_train, seed)]
    test = test[stratified_subset(labels[test], max_test, seed + 1)]
    return train, test


def _read_npz_rows(npz: Path, wanted: np.ndarray, size, chunk: int = 512) -> np.ndarray:
    """Stream array x out of the npz in chunks, keeping and resizing only the `wanted` rows.

    The full array is several GB; it is never held in memory at once.
    """
    try:
        with zipfile.ZipFile(npz) as z, z.open("x.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if fortran or dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
                raise malformed("core50", npz, f"x is {dtype} {shape}"
                                f"{' (Fortran order)' if fortran else ''}, expected uint8 "
                                f"(N, H, W, 3) in C order", LAYOUT)
            if len(wanted) and wanted.max() >= shape[0]:
                raise malformed("core50", npz, f"x holds {shape[0]} images but paths.pkl names "
                                f"more", LAYOUT)
            row = int(np.prod(shape[1:]))
            out, position = [], 0
            order = np.sort(wanted)
            for start in range(0, shape[0], chunk):
                n = min(chunk, shape[0] - start)
                buf = f.read(n * row)
                if len(buf) != n * row:
                    raise malformed("core50", npz, "x ends early (truncated file)", LAYOUT)
                stop = np.searchsorted(order, start + n)
                if stop > position:
                    rows = np.frombuffer(buf, np.uint8).reshape((n,) + tuple(shape[1:]))
                    out.append(resize_images(to_unit(rows[order[position:stop] - start]), size))
                    position = stop
                if position == len(order):
                    break
    except KeyError:
        raise malformed("core50", npz, "no array named x inside", LAYOUT) from None
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        raise malformed("core50", npz, f"cannot read it as .npz ({e})", LAYOUT) from None
    images = np.concatenate(out) if out else np.zeros((0,) + tuple(size) + (3,), np.float32)
    # back from sorted order to the order of `wanted`
    return images[np.searchsorted(order, wanted)]


def _load_npz(root: Path, size, classes, test_sessions, seed, max_train, max_test):
    npz, paths_pkl = root / "core50_imgs.npz", root / "paths.pkl"
    if not paths_pkl.is_file():
        raise missing("core50", [paths_pkl], LAYOUT)
    try:
        with open(paths_pkl, "rb") as f:
            paths = pickle.load(f)
    except Exception as e:  # truncated or foreign pickles raise several exception types
        raise malformed("core50", paths_pkl, f"not a readable pickle ({e})", LAYOUT) from None
    if not isinstance(paths, (list, tuple)) or not paths:
        raise malformed("core50", paths_pkl, "expected a non-empty list of image paths", LAYOUT)
    so = np.array([_session_object(p, paths_pkl) for p in paths])
    labels = _labels(so[:, 1], classes)
    train, test = _split_indices(so[:, 0], labels, test_sessions, seed, max_train, max_test)
    images = _read_npz_rows(npz, np.concatenate([train, test]), size)
    return (images[:len(train)], labels[train], images[len(train):], labels[test],
            {"source": str(npz), "layout": "npz"})


def _load_png(root: Path, size, classes, test_sessions, seed, max_train, max_test):
    from PIL import Image

    files = [p for p in root.glob("s*/o*/*.png")
             if _SESSION.match(p.parent.parent.name) and _OBJECT.match(p.parent.name)]
    # numeric order (s2 before s10), the order of the npz layout's paths.pkl
    files.sort(key=lambda p: (int(p.parent.parent.name[1:]), int(p.parent.name[1:]), p.name))
    so = np.array([_session_object(p.relative_to(root), root) for p in files])
    labels = _labels(so[:, 1], classes)
    train, test = _split_indices(so[:, 0], labels, test_sessions, seed, max_train, max_test)

    def read(indices):
        out = []
        for i in indices:
            try:
                with Image.open(files[i]) as im:
                    img = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except Exception as e:  # PIL raises several types for damaged files
                raise malformed("core50", files[i], f"not a readable PNG ({e})", LAYOUT) from None
            out.append(resize_images(to_unit(img[None]), size)[0])
        return np.stack(out)

    return read(train), labels[train], read(test), labels[test], {"source": str(root),
                                                                  "layout": "png"}


def _labels(objects: np.ndarray, classes: str) -> np.ndarray:
    if classes == "category":
        return ((objects - 1) // 5).astype(np.int64)
    return (objects - 1).astype(np.int64)


def load_core50(data_dir=None, resize=None, classes: str = "category",
                test_sessions=TEST_SESSIONS, seed: int = 0, max_train=None, max_test=None,
                **_) -> Dataset:
    """classes: "category" (10 classes, default) or "object" (50 classes)."""
    base = require_dir("core50", data_dir, LAYOUT)
    if classes not in ("category", "object"):
        raise DatasetError(f"core50: classes must be 'category' or 'object', got {classes!r}")
    size = parse_size(resize) or DEFAULT_SIZE
    args = (size, classes, tuple(int(s) for s in test_sessions), seed, max_train, max_test)
    if (base / "core50_imgs.npz").is_file():
        parts = _load_npz(base, *args)
    else:
        png_root = next((r for r in (base / "core50_128x128", base)
                         if r.is_dir() and any(r.glob("s*/o*/*.png"))), None)
        if png_root is None:
            raise missing("core50", [base / "core50_imgs.npz", base / "paths.pkl",
                                     base / "core50_128x128" / "s1" / "o1" / "*.png",
                                     base / "s1" / "o1" / "*.png"], LAYOUT)
        parts = _load_png(png_root, *args)
    xtr, ytr, xte, yte, meta = parts
    names = CATEGORIES if classes == "category" else [
        f"{CATEGORIES[o // 5]}_{o % 5 + 1}" for o in range(NUM_OBJECTS)]
    meta.update(classes=classes, test_sessions=list(args[2]), size=list(size))
    return Dataset(name="core50", modality="image", x_train=xtr, y_train=ytr, x_test=xte,
                   y_test=yte, class_names=list(names), meta=meta)
