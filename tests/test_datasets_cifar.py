"""CIFAR-10 loader on small batches written here in the real "python version" format."""

import pickle

import numpy as np
import pytest

from tinycil.datasets import DatasetError, load_dataset
from tinycil.datasets.cifar import CLASSES


def batch_rows(labels):
    """One uint8 row of 3072 per image, channel-major: R plane, G plane, B plane (32x32 each)."""
    n = len(labels)
    rows = np.zeros((n, 3, 32, 32), np.uint8)
    rows[:, 0] = np.asarray(labels, np.uint8)[:, None, None] * 25  # red encodes the label
    rows[:, 1, :, :16] = 255                                      # green: left half only
    rows[:, 2] = 128                                              # blue: constant
    return rows.reshape(n, 3072)


def write_batch(path, labels, data=None):
    batch = {b"batch_label": b"training batch", b"labels": list(labels),
             b"data": batch_rows(labels) if data is None else data,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)  # as the original batches: bytes keys


def write_cifar(folder, per_batch=10):
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for i in range(1, 6):
        y = [(k + i) % 10 for k in range(per_batch)]
        labels += y
        write_batch(folder / f"data_batch_{i}", y)
    y_test = [k % 10 for k in range(per_batch)]
    write_batch(folder / "test_batch", y_test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, f,
                    protocol=2)
    return np.array(labels), np.array(y_test)


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_loads(tmp_path, nested):
    folder = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    y_train, y_test = write_cifar(folder)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.input_shape == (32, 32, 3) and ds.modality == "image"
    assert ds.x_train.shape == (50, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.class_names == CLASSES
    # channel-major rows became channels-last images
    np.testing.assert_allclose(ds.x_train[:, 5, 5, 0], y_train * 25 / 255.0, atol=1e-6)
    assert np.all(ds.x_train[:, :, :16, 1] == 1.0) and np.all(ds.x_train[:, :, 16:, 1] == 0.0)
    np.testing.assert_allclose(ds.x_test[..., 2], 128 / 255.0, atol=1e-6)


def test_cifar10_resize_and_subset(tmp_path):
    write_cifar(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, resize=(16, 16), max_train=20, seed=3)
    assert ds.x_train.shape == (20, 16, 16, 3)
    assert np.bincount(ds.y_train, minlength=10).tolist() == [2] * 10
    assert np.all(ds.x_train[:, :, :8, 1] == 1.0)


def test_cifar10_missing_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "data_batch_3" in str(e.value) and "Expected layout" in str(e.value)


def test_cifar10_missing_folder(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "cifar-10-batches-py" in str(e.value) and "test_batch" in str(e.value)


def test_cifar10_truncated_batch(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match="data_batch_2.*malformed"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar10_wrong_row_length(tmp_path):
    write_cifar(tmp_path)
    write_batch(tmp_path / "test_batch", [1, 2], data=np.zeros((2, 3000), np.uint8))
    with pytest.raises(DatasetError, match="3072"):
        load_dataset("cifar10", data_dir=tmp_path)
