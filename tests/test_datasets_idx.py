"""MNIST-style loaders on small files written here in the real formats (IDX and mnist.npz)."""

import gzip
import struct

import numpy as np
import pytest

from tinycil.datasets import DatasetError, load_dataset
from tinycil.datasets import idx
from tinycil.datasets.idx import read_idx

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: 0, 0, type code, ndim; big-endian uint32 dims; big-endian data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def make_split(n, rng):
    y = np.arange(n, dtype=np.uint8) % 10
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    x[:, 0, 0] = y * 20  # a pixel that ties each image to its label
    return x, y


def write_idx_set(folder, n_train=30, n_test=20, gz=True, dotted=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [*make_split(n_train, rng), *make_split(n_test, rng)]
    for name, arr in zip(NAMES, arrays):
        if dotted:
            name = name.replace("-idx", ".idx")
        data = idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def check_loaded(ds, arrays):
    xtr, ytr, xte, yte = arrays
    assert ds.modality == "image" and ds.input_shape == (28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.num_classes == 10
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.y_test, yte)
    np.testing.assert_allclose(ds.x_train[..., 0], xtr / 255.0, atol=1e-6)
    np.testing.assert_allclose(ds.x_test[..., 0], xte / 255.0, atol=1e-6)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_sets_load_gz_and_plain(tmp_path, gz, name):
    arrays = write_idx_set(tmp_path, gz=gz)
    ds = load_dataset(name, data_dir=tmp_path)
    check_loaded(ds, arrays)


def test_idx_dotted_file_names(tmp_path):
    arrays = write_idx_set(tmp_path, gz=False, dotted=True)
    check_loaded(load_dataset("mnist", data_dir=tmp_path), arrays)


def test_read_idx_other_types(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5
    (tmp_path / "f.idx").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), a)
    b = np.array([-70000, 3, 70000], dtype=np.int32)
    (tmp_path / "i.idx").write_bytes(idx_bytes(b))
    np.testing.assert_array_equal(read_idx(tmp_path / "i.idx"), b)


def test_mnist_npz(tmp_path):
    rng = np.random.default_rng(1)
    xtr, ytr = make_split(40, rng)
    xte, yte = make_split(10, rng)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    check_loaded(load_dataset("mnist", data_dir=tmp_path), (xtr, ytr, xte, yte))
    # the npz file itself may be given
    check_loaded(load_dataset("mnist", data_dir=tmp_path / "mnist.npz"), (xtr, ytr, xte, yte))


def test_mnist_npz_missing_array(tmp_path):
    x, y = make_split(10, np.random.default_rng(0))
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x)
    with pytest.raises(DatasetError, match="y_test"):
        load_dataset("mnist", data_dir=tmp_path)


def test_wrong_magic(tmp_path):
    write_idx_set(tmp_path, gz=False)
    path = tmp_path / NAMES[0]
    raw = bytearray(path.read_bytes())
    raw[0:4] = b"\x12\x34\x08\x03"
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    assert "not an IDX file" in str(e.value) and "train-images-idx3-ubyte" in str(e.value)
    assert "Expected layout" in str(e.value)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file(tmp_path, gz):
    write_idx_set(tmp_path, gz=False)
    path = tmp_path / NAMES[2]
    data = path.read_bytes()[:-100]
    if gz:
        path.unlink()
        (tmp_path / f"{NAMES[2]}.gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_broken_gzip(tmp_path):
    write_idx_set(tmp_path, gz=True)
    path = tmp_path / f"{NAMES[1]}.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DatasetError, match="gzip"):
        load_dataset("mnist", data_dir=tmp_path)


def test_labels_images_count_mismatch(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / NAMES[1]).write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(DatasetError, match="labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_file_and_folder(tmp_path):
    write_idx_set(tmp_path, gz=True)
    (tmp_path / f"{NAMES[3]}.gz").unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "mnist.npz" in msg and "Expected layout" in msg
    with pytest.raises(DatasetError, match="Expected layout"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("mnist")


def test_resize_integer_factor_is_block_average(tmp_path):
    arrays = write_idx_set(tmp_path, gz=False)
    ds = load_dataset("mnist", data_dir=tmp_path, resize=(14, 14))
    assert ds.input_shape == (14, 14, 1)
    expect = arrays[0].reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)) / 255.0
    np.testing.assert_allclose(ds.x_train[..., 0], expect, atol=1e-6)
    assert ds.meta["resized_from"] == [28, 28]


def test_fashion_mnist_without_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "DEBIAN_FASHION_DIR", tmp_path / "fashion-mnist")
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz") in msg
