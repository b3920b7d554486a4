"""benchmarks/device_width.py refuses bad arguments in one line, before it simulates or writes."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, words", [
    (["--seeds", "0", "-2"], "seeds must be 0 or more, got -2"),
    (["--dataset", "nosuch"], "invalid choice: 'nosuch'"),
])
def test_bad_arguments_get_one_line_and_exit_2(argv, words):
    results = ROOT / "benchmarks" / "results" / "device_width.json"
    before = results.read_bytes() if results.is_file() else None
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_width.py")] + argv,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert words in run.stderr and "Traceback" not in run.stderr
    assert (results.read_bytes() if results.is_file() else None) == before
