"""UCI HAR (Human Activity Recognition Using Smartphones): the raw inertial signals.

Each of the nine signal files holds one window per line: 128 whitespace-separated floats
(2.56 s at 50 Hz). Windows are stacked channels-last into (N, 128, 9).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import Dataset, malformed, missing, require_dir

STEPS = 128
SIGNALS = [f"{kind}_{axis}" for kind in ("body_acc", "body_gyro", "total_acc")
           for axis in ("x", "y", "z")]
DEFAULT_ACTIVITIES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING",
                      "LAYING"]

LAYOUT = """\
  <data-dir>/UCI HAR Dataset/   (or <data-dir> itself)
      activity_labels.txt                 "1 WALKING" ... "6 LAYING"
      train/y_train.txt                   one label 1..6 per line
      train/Inertial Signals/body_acc_x_train.txt ... total_acc_z_train.txt
          (body_acc, body_gyro, total_acc x y z: 9 files, one window of 128 floats per line)
      test/y_test.txt, test/Inertial Signals/*_test.txt   the same for the test split"""


def _root(data_dir) -> Path:
    base = require_dir("har", data_dir, LAYOUT)
    for root in (base / "UCI HAR Dataset", base):
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root
    raise missing("har", [base / "UCI HAR Dataset" / "train", base / "train"], LAYOUT)


def _floats(path: Path, per_line: int | None) -> np.ndarray:
    if not path.is_file():
        raise missing("har", [path], LAYOUT)
    lines = path.read_text().split("\n")
    lines = [ln for ln in lines if ln.strip()]
    try:
        # one split over the whole text is much faster than np.loadtxt on 7352 x 128 values
        values = np.array(" ".join(lines).split(), dtype=np.float32)
    except ValueError as e:
        raise malformed("har", path, f"non-numeric value ({e})", LAYOUT) from None
    width = per_line or 1
    if len(values) != len(lines) * width:
        raise malformed("har", path, f"{len(lines)} lines should hold {width} values each, found "
                        f"{len(values)} values in all", LAYOUT)
    return values.reshape(len(lines), width) if per_line else values


def _split(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    labels = _floats(root / part / f"y_{part}.txt", None)
    if np.any(labels != np.round(labels)) or (len(labels) and (labels.min() < 1 or labels.max() > 6)):
        raise malformed("har", root / part / f"y_{part}.txt", "labels must be integers 1..6",
                        LAYOUT)
    channels = []
    for signal in SIGNALS:
        path = root / part / "Inertial Signals" / f"{signal}_{part}.txt"
        x = _floats(path, STEPS)
        if len(x) != len(labels):
            raise malformed("har", path, f"{len(x)} windows but {len(labels)} labels in "
                            f"y_{part}.txt", LAYOUT)
        channels.append(x)
    return np.stack(channels, axis=-1), labels.astype(np.int64) - 1


def _activity_names(root: Path) -> list[str]:
    path = root / "activity_labels.txt"
    if not path.is_file():
        return list(DEFAULT_ACTIVITIES)
    names = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, 7)):
        raise malformed("har", path, f"expected ids 1..6, found {sorted(names)}", LAYOUT)
    return [names[i] for i in range(1, 7)]


def load_har(data_dir=None, **_) -> Dataset:
    root = _root(data_dir)
    xtr, ytr = _split(root, "train")
    xte, yte = _split(root, "test")
    return Dataset(name="har", modality="inertial", x_train=xtr, y_train=ytr, x_test=xte,
                   y_test=yte, class_names=_activity_names(root),
                   meta={"source": str(root), "channels": SIGNALS})
