"""Shared pytest configuration.

The suite runs against a private copy of the project's sources, never the work tree itself: a
user's `make demo` leaves an exported model in firmware/generated/, build output in
firmware/.pio/ and an emulator recorded in .tinycil/, and none of that may change what the tests
see or be changed by them. The copy holds exactly what git would check out (minus the model the
exporter writes), so every build the tests make is a build from a clean state.
"""

import os
import shutil
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent

# PlatformIO must never reach for its registry or phone home during tests.
os.environ.setdefault("PLATFORMIO_SETTING_ENABLE_TELEMETRY", "No")
os.environ.setdefault("PLATFORMIO_DISABLE_UPGRADE_CHECK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What a clean clone does not have: the user's runs, exports, builds, emulator state, caches.
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", ".pio", "runs", ".tinycil", "__pycache__",
                                      ".pytest_cache", "*.egg-info", "model_data.*")


@pytest.fixture(scope="session", autouse=True)
def clean_project_copy(tmp_path_factory) -> Path:
    """The session's copy of the project; tinycil finds firmware/ and boards/ there, and records
    emulators in a state folder of its own."""
    home = tmp_path_factory.mktemp("tinycil") / "project"
    shutil.copytree(CHECKOUT, home, symlinks=True, ignore=_NOT_SOURCES)
    state = tmp_path_factory.mktemp("state")
    saved = {k: os.environ.get(k) for k in ("TINYCIL_HOME", "TINYCIL_STATE_DIR")}
    os.environ["TINYCIL_HOME"] = str(home)
    os.environ["TINYCIL_STATE_DIR"] = str(state)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def root(clean_project_copy) -> Path:
    """The project root the tests read and build (the session's clean copy)."""
    return clean_project_copy
