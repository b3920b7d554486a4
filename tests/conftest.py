"""Shared pytest configuration."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# PlatformIO must never reach for its registry or phone home during tests.
os.environ.setdefault("PLATFORMIO_SETTING_ENABLE_TELEMETRY", "No")
os.environ.setdefault("PLATFORMIO_DISABLE_UPGRADE_CHECK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
