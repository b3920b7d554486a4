"""The device is its owner's (host side): the run's device key in the run folder, and the sane
ranges of the training settings, which host and firmware share through protocol_spec. The
device's side (UNLOCK, LOCKED, BAD_ARGUMENT) is proven on the emulated board in
test_persist_e2e.py."""

from __future__ import annotations

import math
import stat

import pytest

from tinycil import protocol_spec as spec
from tinycil.link.session import BadTrainingSettings, train_control_payload
from tinycil.runfolder import RunFolderError, ensure_device_key, read_device_key

VALID = {"lr": 0.05, "momentum": 0.9, "clip_norm": 5.0, "batch_new": 8, "batch_replay": 8,
         "seed": 0, "epochs": 3}


def test_the_run_key_is_made_once_and_kept(tmp_path):
    assert read_device_key(tmp_path) is None
    key = ensure_device_key(tmp_path)
    assert len(key) == spec.DEVICE_KEY_BYTES
    assert ensure_device_key(tmp_path) == key == read_device_key(tmp_path)  # every export: same
    mode = (tmp_path / "device_key").stat().st_mode
    assert not mode & (stat.S_IRWXG | stat.S_IRWXO)  # the owner's alone
    other = tmp_path / "other"
    other.mkdir()
    assert ensure_device_key(other) != key  # another run, another key


def test_a_damaged_key_file_says_what_to_do(tmp_path):
    (tmp_path / "device_key").write_text("not hex\n")
    with pytest.raises(RunFolderError, match="damaged.*export the run again"):
        read_device_key(tmp_path)


@pytest.mark.parametrize("field", sorted(spec.TRAIN_LIMITS))
def test_every_training_setting_has_a_sane_range(field):
    low, high = spec.TRAIN_LIMITS[field]
    assert spec.train_limits_error({**VALID, field: low}) is None
    assert spec.train_limits_error({**VALID, field: high}) is None
    too_big = high * 2 if high else 1
    for bad in (too_big, low - 1, math.nan, math.inf, "fast"):
        problem = spec.train_limits_error({**VALID, field: bad})
        assert problem and problem.startswith(f"{field} = "), (field, bad)
    with pytest.raises(BadTrainingSettings, match=f"{field} = .*outside its sane range"):
        train_control_payload(**{**VALID, field: too_big})


def test_the_issues_learning_rate_is_refused():
    with pytest.raises(BadTrainingSettings, match="lr = 1e"):
        train_control_payload(**{**VALID, "lr": 1e30})
    import struct

    assert len(train_control_payload(**VALID)) == struct.calcsize(
        spec.struct_format(spec.TRAIN_CONTROL_FIELDS))


def test_the_firmware_header_carries_the_ranges_and_the_key_size(root):
    header = (root / "firmware" / "lib" / "protocol" / "tc_protocol_spec.h").read_text()
    assert f"#define TC_DEVICE_KEY_BYTES {spec.DEVICE_KEY_BYTES}" in header
    for field, (low, high) in spec.TRAIN_LIMITS.items():
        assert f"#define TC_TRAIN_{field.upper()}_MIN " in header
        assert f"#define TC_TRAIN_{field.upper()}_MAX " in header
    assert "#define TC_STATUS_LOCKED" in header and "#define TC_MSG_UNLOCK" in header
