"""UCI HAR loader on a small txt tree written here in the real layout."""

import numpy as np
import pytest

from tinycil.datasets import DatasetError, load_dataset
from tinycil.datasets.har import SIGNALS

ACTIVITIES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]


def raw_windows(n, part_offset):
    """(n, 128, 9): signal k of window i holds k + i/100 + a ramp, so every value is traceable."""
    i = np.arange(n)[:, None, None]
    t = np.arange(128)[None, :, None]
    k = np.arange(9)[None, None, :]
    return (k + i / 100.0 + t * 1e-3 + part_offset).astype(np.float64)


def write_har(root, n_train=12, n_test=6):
    base = root / "UCI HAR Dataset"
    (base / "activity_labels.txt").parent.mkdir(parents=True, exist_ok=True)
    (base / "activity_labels.txt").write_text(
        "".join(f"{i + 1} {name}\n" for i, name in enumerate(ACTIVITIES)))
    data = {}
    for part, n, off in (("train", n_train, 0.0), ("test", n_test, 0.5)):
        folder = base / part / "Inertial Signals"
        folder.mkdir(parents=True)
        x = raw_windows(n, off)
        y = np.arange(n) % 6 + 1
        (base / part / f"y_{part}.txt").write_text("".join(f"{v}\n" for v in y))
        for k, signal in enumerate(SIGNALS):
            # the real files: fixed-width scientific notation, leading spaces, double spaces
            lines = ["".join(f" {v: .7e}" for v in x[i, :, k]) for i in range(n)]
            (folder / f"{signal}_{part}.txt").write_text("\n".join(lines) + "\n")
        data[part] = (x, y - 1)
    return base, data


def test_har_loads_and_standardises_with_train_statistics(tmp_path):
    _, data = write_har(tmp_path)
    ds = load_dataset("har", data_dir=tmp_path)
    assert ds.modality == "inertial" and ds.input_shape == (128, 9)
    assert ds.x_train.shape == (12, 128, 9) and ds.x_test.shape == (6, 128, 9)
    assert ds.x_train.dtype == np.float32 and ds.y_test.dtype == np.int64
    assert ds.class_names == ACTIVITIES
    np.testing.assert_array_equal(ds.y_train, data["train"][1])
    np.testing.assert_array_equal(ds.y_test, data["test"][1])
    # standardised per channel with the training statistics
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 1)), 1.0, atol=1e-4)
    mean = np.array(ds.meta["standardised"]["mean"])
    std = np.array(ds.meta["standardised"]["std"])
    np.testing.assert_allclose(mean, data["train"][0].mean(axis=(0, 1)), rtol=1e-5)
    # channel order body_acc xyz, body_gyro xyz, total_acc xyz, and the test set uses train stats
    np.testing.assert_allclose(ds.x_test * std + mean, data["test"][0], atol=1e-4)


def test_har_tree_given_directly(tmp_path):
    base, _ = write_har(tmp_path)
    ds = load_dataset("har", data_dir=base, max_train=6)
    assert len(ds.y_train) == 6 and sorted(ds.y_train.tolist()) == list(range(6))


def test_har_short_line(tmp_path):
    base, _ = write_har(tmp_path)
    path = base / "train" / "Inertial Signals" / "body_gyro_y_train.txt"
    lines = path.read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:127])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        load_dataset("har", data_dir=tmp_path)
    assert "body_gyro_y_train.txt" in str(e.value) and "Expected layout" in str(e.value)


def test_har_missing_signals_folder(tmp_path):
    base, _ = write_har(tmp_path)
    for f in (base / "test" / "Inertial Signals").iterdir():
        f.unlink()
    (base / "test" / "Inertial Signals").rmdir()
    with pytest.raises(DatasetError) as e:
        load_dataset("har", data_dir=tmp_path)
    assert "body_acc_x_test.txt" in str(e.value) and "Inertial Signals" in str(e.value)


def test_har_missing_tree_and_bad_labels(tmp_path):
    with pytest.raises(DatasetError, match="UCI HAR Dataset"):
        load_dataset("har", data_dir=tmp_path)
    base, _ = write_har(tmp_path)
    (base / "train" / "y_train.txt").write_text("1\n7\n" * 6)
    with pytest.raises(DatasetError, match="1..6"):
        load_dataset("har", data_dir=tmp_path)


def test_har_refuses_resize(tmp_path):
    write_har(tmp_path)
    with pytest.raises(DatasetError, match="image data sets only"):
        load_dataset("har", data_dir=tmp_path, resize=(14, 14))
