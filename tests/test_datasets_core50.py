"""CORe50 loader on small trees written here in its two real layouts (png tree, npz + paths.pkl)."""

import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from tinycil.datasets import DatasetError, load_dataset

SESSIONS = (1, 2, 3, 7)   # 3 and 7 are test sessions
OBJECTS = (1, 6, 12, 50)  # categories 0, 1, 2, 9
FRAMES = 2


def image_for(session, obj, frame):
    """128x128 RGB; red = object, green = session, blue = frame: every pixel is traceable."""
    img = np.zeros((128, 128, 3), np.uint8)
    img[..., 0] = obj * 5
    img[..., 1] = session * 20
    img[..., 2] = frame * 100
    return img


def entries():
    for s in SESSIONS:
        for o in OBJECTS:
            for f in range(FRAMES):
                yield s, o, f, f"s{s}/o{o}/C_{s:02d}_{o:02d}_{f:03d}.png"


def write_png_tree(root):
    base = root / "core50_128x128"
    for s, o, f, rel in entries():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_for(s, o, f)).save(base / rel)


def write_npz(root, compressed=False):
    root.mkdir(parents=True, exist_ok=True)
    items = list(entries())
    x = np.stack([image_for(s, o, f) for s, o, f, _ in items])
    (np.savez_compressed if compressed else np.savez)(root / "core50_imgs.npz", x=x)
    with open(root / "paths.pkl", "wb") as fh:
        pickle.dump([rel for *_, rel in items], fh)


def check(ds, size=32):
    assert ds.modality == "image" and ds.input_shape == (size, size, 3)
    assert ds.num_classes == 10 and ds.class_names[0] == "plug_adapter"
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    # train: sessions 1, 2; test: sessions 3, 7 -> 2 sessions x 4 objects x 2 frames each
    assert len(ds.y_train) == 16 and len(ds.y_test) == 16
    session_train = np.round(ds.x_train[:, 0, 0, 1] * 255 / 20).astype(int)
    session_test = np.round(ds.x_test[:, 0, 0, 1] * 255 / 20).astype(int)
    assert set(session_train) == {1, 2} and set(session_test) == {3, 7}
    objects = np.round(ds.x_train[:, 0, 0, 0] * 255 / 5).astype(int)
    np.testing.assert_array_equal(ds.y_train, (objects - 1) // 5)
    assert sorted(set(ds.y_test.tolist())) == [0, 1, 2, 9]
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_core50_png_layout(tmp_path):
    write_png_tree(tmp_path)
    check(load_dataset("core50", data_dir=tmp_path))


@pytest.mark.parametrize("compressed", [False, True])
def test_core50_npz_layout_matches_png(tmp_path, compressed):
    write_npz(tmp_path / "npz", compressed)
    write_png_tree(tmp_path / "png")
    a = load_dataset("core50", data_dir=tmp_path / "npz", resize=(16, 16))
    b = load_dataset("core50", data_dir=tmp_path / "png", resize=(16, 16))
    check(a, 16)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_allclose(a.x_train, b.x_train, atol=1e-6)
    np.testing.assert_allclose(a.x_test, b.x_test, atol=1e-6)


def test_core50_subset_object_classes_and_sessions(tmp_path):
    write_npz(tmp_path)
    ds = load_dataset("core50", data_dir=tmp_path, max_train=8, max_test=4, seed=1,
                      classes="object", test_sessions=(2,))
    assert ds.num_classes == 50 and len(ds.y_train) == 8 and len(ds.y_test) == 4
    assert sorted(set(ds.y_train.tolist())) == [0, 5, 11, 49]
    sessions = np.round(ds.x_test[:, 0, 0, 1] * 255 / 20).astype(int)
    assert set(sessions) == {2}
    # subsets are picked from the labels before decoding; the images still match the labels
    objects = np.round(ds.x_train[:, 0, 0, 0] * 255 / 5).astype(int)
    np.testing.assert_array_equal(ds.y_train, objects - 1)


def test_core50_missing(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("core50", data_dir=tmp_path)
    msg = str(e.value)
    assert "core50_imgs.npz" in msg and "paths.pkl" in msg and "o1" in msg
    assert "Expected layout" in msg


def test_core50_npz_malformed(tmp_path):
    write_npz(tmp_path)
    with open(tmp_path / "paths.pkl", "wb") as fh:
        pickle.dump(["session1/object1/a.png"], fh)
    with pytest.raises(DatasetError, match="does not name a session"):
        load_dataset("core50", data_dir=tmp_path)
    write_npz(tmp_path)
    raw = (tmp_path / "core50_imgs.npz").read_bytes()
    (tmp_path / "core50_imgs.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="core50_imgs.npz is malformed"):
        load_dataset("core50", data_dir=tmp_path)
    with zipfile.ZipFile(tmp_path / "core50_imgs.npz", "w") as z:
        z.writestr("images.npy", b"")
    with pytest.raises(DatasetError, match="no array named x"):
        load_dataset("core50", data_dir=tmp_path)
