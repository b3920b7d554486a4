"""On the emulated board: `tinycil run` with several tasks known at deployment. The device measures
the deployed model (the row of the last known task) and learns the rest; the rows of the earlier
known tasks exist only on the host, so the device's RESULT is written once the host reference is
simulated after the device's tasks, with those rows marked as the host's. The run trains with the
plain cross-entropy (fashion-mnist's and mnist5k's default; digits' is the asymmetric one, proven
on the board by test_e2e_digits.py), so the device proves that loss too."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from helpers import emulator_home
from tinycil.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm"),
]

KNOWN = 3


@pytest.fixture
def home(root, tmp_path, monkeypatch):
    yield from emulator_home(root, tmp_path, monkeypatch)


def cli(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, res.output


def test_run_with_three_known_tasks_records_the_device_and_marks_the_host_rows(home, tmp_path):
    run = tmp_path / "run"
    code, out = cli("run", "--dataset", "digits", "--board", "mps2_an500", "--known", KNOWN,
                    "--epochs", 2, "--distill-iters", 10, "--seed", 3, "--no-asymmetric-ce",
                    "-o", run)
    assert code == 0, out
    results = json.loads((run / "results.json").read_text())
    device, log = results["device"], results["device_log"]
    assert device["tasks_completed"] == [3, 4]
    assert device["rows_from_host"] == [0, 1]
    R, host = device["accuracy_matrix"], results["method"]["accuracy_matrix"]
    assert len(R) == 5
    # the rows the device measured are its own, the others the host reference's
    for i in range(5):
        expected = log["rows"][str(i)] if str(i) in log["rows"] else host[i][:i + 1]
        assert R[i][:i + 1] == expected
    assert sorted(log["rows"]) == ["2", "3", "4"]
    # the device learned what its host reference and the firmware's runtime on the host learned
    assert json.loads((run / "config.json").read_text())["training"]["asymmetric_ce"] is False
    assert results["fidelity"]["max_abs_diff_vs_simulation"] <= 0.01
    assert results["fidelity"]["max_abs_diff_vs_twin"] == 0.0
    assert device["ram_bytes"] > 0 and device["instructions_per_train_sample"] > 0
    assert "rows 0, 1 of the accuracy matrix are the host reference's" in out

    # the report of the finished run shows the same
    code, again = cli("report", run)
    assert code == 0, again
    assert "device (some rows: host)" in again
    assert json.loads((run / "results.json").read_text())["device"] == device
