"""The device record cannot lie: a task counts only when the device's current session completed
it (or saved it at the end of a task), one record per device learning session (older ones kept
aside, never mixed), rows the device did not measure are marked as the host's, and the advice
for a device in an unknown state names only ways on that work.

These tests take the device's INFO as the firmware reports it (see protocol_spec.INFO_FIELDS);
the end-to-end proof on the emulated board is in test_record_device_e2e.py.
"""

from __future__ import annotations

import csv
import json

import pytest

from tinycil import protocol_spec as spec
from tinycil.link.stream import (RunData, StreamError, _record_device, check_device,
                                 complete_device_result, confirmed_task, open_session_log, reset_advice, session_log)
from tinycil.report import format_table, summary_markdown
from tinycil.runfolder import RunFolder

from test_cli_bad_inputs import write_run

SIGNATURE = "0011223344556677"
PERSIST = spec.PERSIST_STATES


def info(classes_seen: int, session: int, persist: str = "OFF", persist_task: int = 0) -> dict:
    return {"model_signature": SIGNATURE, "input_shape": [4], "classes_seen": classes_seen,
            "session_id": session, "persist": PERSIST[persist], "persist_task": persist_task,
            "persist_sequence": 3, "ram_used": 1000, "flash_used": 2000}


@pytest.fixture
def data(tmp_path) -> RunData:
    return RunData.load(write_run(tmp_path / "run", n_tasks=3))  # classes seen: 2, 4, 6


def check(data, device, task, log=None):
    check_device(data, device, task, str(data.run_dir), "--board mps2_an500", log)


def completed(session: int, *tasks: int) -> dict:
    return {"session": {"signature": SIGNATURE, "session_id": session}, "rows": {},
            "tasks": {str(t): {"samples": 4} for t in tasks}}


def test_a_deployed_device_continues_with_the_first_device_task(data):
    check(data, info(2, 1), 1)
    with pytest.raises(StreamError, match="has learned up to task 0, .*stream task 1 next"):
        check(data, info(2, 1), 2)


def test_the_class_count_alone_does_not_make_a_task_complete(data):
    # The device grew for task 1 (BEGIN_TASK) but no record says it completed the task.
    with pytest.raises(StreamError, match="began task 1 .*not recorded as complete") as exc:
        check(data, info(4, 1), 2)
    advice = str(exc.value)
    # Without persistence a restart falls back to the deployed model: task 1 again works.
    assert "--task 1 --restart" in advice and "tinycil flash --board mps2_an500" in advice
    # A record of another session (before a reset) does not count either.
    with pytest.raises(StreamError, match="began task 1"):
        check(data, info(4, 2), 2, completed(1, 1))


def test_an_interrupted_task_is_called_so(data):
    log = completed(1)
    log["in_progress"] = {"task": 1, "interrupted": True}
    with pytest.raises(StreamError, match="began task 1 but its learning of that task was "
                                          "interrupted"):
        check(data, info(4, 1), 2, log)
    with pytest.raises(StreamError, match="was interrupted"):
        check(data, info(4, 1), 1, log)  # task 1 again needs a restart or a flash too


def test_a_task_completed_in_this_session_is_continued(data):
    log = completed(1, 1)
    assert confirmed_task(data, info(4, 1), log) == 1
    check(data, info(4, 1), 2, log)
    with pytest.raises(StreamError, match="already learned task 1: stream task 2 next"):
        check(data, info(4, 1), 1, log)


def test_a_state_saved_at_the_end_of_a_task_is_continued(data):
    # Persistence saves only at END_OF_TASK, after every other frame of the task was answered.
    device = info(4, 9, "RESTORED", 1)
    assert confirmed_task(data, device, None) == 1
    check(data, device, 2)
    assert "stream task 2 again" in reset_advice(data, device, "run", "--board mps2_an500")
    # A save of an earlier task does not vouch for the classes of a later one.
    with pytest.raises(StreamError, match="began task 2") as exc:
        check(data, info(6, 9, "SAVED", 1), 2)
    assert "Restart it from the state it saved after task 1" in str(exc.value)
    assert "--task 2 --restart" in str(exc.value)


def test_a_device_in_no_known_state_gets_only_the_flash(data):
    with pytest.raises(StreamError, match="5 classes, which matches no task") as exc:
        check(data, info(5, 1, "FAILED"), 2)
    assert "--restart" not in str(exc.value) and "Flash it again" in str(exc.value)
    assert "flash it again" in reset_advice(data, info(4, 1, "FAILED"), "run",
                                            "--board mps2_an500")


def _measured(task: int) -> dict:
    return {"task": task, "samples": 4, "ticks_per_train_sample": 100.0,
            "training": {"batch_new": 2, "batch_replay": 2}}


HOST = [[0.9, None, None], [0.8, 0.7, None], [0.6, 0.5, 0.4]]
STATS = {"counter_kind_name": "INSTRUCTIONS", "ram_used": 1000}


def _method() -> dict:
    from tinycil.learn.metrics import make_result

    return make_result(HOST, train_flops=1.0, buffer_samples=6, buffer_bytes=30,
                       buffer_fraction=0.01)


def _complete(results, data, device, task, row):
    log = open_session_log(results, data, device)
    log["rows"][str(task)] = row
    log["tasks"][str(task)] = _measured(task)
    _record_device(data.run_dir, data, results, device, STATS)


def test_records_of_different_device_sessions_are_never_mixed(data):
    run = RunFolder(data.run_dir)
    results = {"method": _method()}
    first = info(2, 0x1111)
    log = open_session_log(results, data, first)
    log["rows"]["0"] = [1.0]
    _complete(results, data, first, 1, [0.95, 0.85])
    on_disk = run.read_results()
    assert on_disk["device"]["accuracy_matrix"] == [[1.0, None], [0.95, 0.85]]
    assert on_disk["device"]["rows_from_host"] == []
    assert on_disk["device"]["session"]["session_id"] == 0x1111
    assert session_log(on_disk, data, first) is not None

    # The device restarted and restored the state it saved after task 1: a new session.
    second = info(4, 0x2222, "RESTORED", 1)
    assert session_log(on_disk, data, second) is None
    _complete(on_disk, data, second, 2, [0.5, 0.4, 0.3])
    final = run.read_results()
    device = final["device"]
    assert device["session"]["session_id"] == 0x2222
    # Rows 0 and 1 were not measured in this session: the host's, and marked as such.
    assert device["rows_from_host"] == [0, 1]
    assert device["accuracy_matrix"] == [[0.9, None, None], [0.8, 0.7, None], [0.5, 0.4, 0.3]]
    assert final["device_log"]["restored"] == {"task": 1, "save": 3}
    # The first session's record is kept whole, aside.
    (old,) = final["device_history"]
    assert old["session"]["session_id"] == 0x1111
    assert old["device"]["accuracy_matrix"] == [[1.0, None], [0.95, 0.85]]
    assert old["device_log"]["rows"] == {"0": [1.0], "1": [0.95, 0.85]}

    # The report presents one session and says which rows are the host's.
    table = format_table(final)
    assert "device (some rows: host)" in table
    assert "rows 0, 1 of the accuracy matrix are the host reference's" in table
    assert "1 earlier device session(s)" in table and "0x00002222" in table
    assert "0x00001111" not in table
    assert "host reference's" in summary_markdown(final)

    # Both sessions' RESULTs are in the CSV files, each under its own name.
    with open(run.matrix_csv_path) as f:
        rows = list(csv.DictReader(f))
    names = {r["run"] for r in rows}
    assert names == {"method", "device", "device_session_00001111"}
    device_rows = [r for r in rows if r["run"] == "device"]
    assert [r["task_2"] for r in device_rows] == ["", "", "0.3"]
    with open(run.metrics_csv_path) as f:
        metrics = {r["run"]: r for r in csv.DictReader(f)}
    assert float(metrics["device"]["final_avg_accuracy"]) == pytest.approx(0.4)
    assert float(metrics["device_session_00001111"]["final_avg_accuracy"]) == pytest.approx(0.9)
    assert metrics["method"]["instructions_per_train_sample"] == ""


def test_without_a_host_reference_a_missing_row_is_never_filled(data):
    results = {}
    second = info(4, 0x3333, "RESTORED", 1)
    _complete(results, data, second, 2, [0.5, 0.4, 0.3])
    on_disk = RunFolder(data.run_dir).read_results()
    assert "device" not in on_disk  # no RESULT until every row is the device's or marked
    assert on_disk["device_log"]["rows"] == {"2": [0.5, 0.4, 0.3]}


def test_a_device_result_that_waited_for_the_host_reference_is_completed_when_it_arrives(data):
    """`tinycil run` with several known tasks: the device streams first, the host reference is
    simulated after; the device's RESULT is then written with the host's rows marked."""
    run = RunFolder(data.run_dir)
    results = {}
    device = info(2, 0x4444)
    log = open_session_log(results, data, device)
    log["rows"]["1"] = [0.85, 0.75]  # the deployed model, measured by the device
    _complete(results, data, device, 2, [0.5, 0.4, 0.3])
    assert complete_device_result(data.run_dir) is False  # no host reference yet: still waits
    assert "device" not in run.read_results()
    on_disk = run.read_results()
    on_disk["method"] = _method()  # what record_simulation adds
    run.write_results(on_disk)
    assert complete_device_result(data.run_dir) is True
    done = run.read_results()["device"]
    assert done["accuracy_matrix"] == [[0.9, None, None], [0.85, 0.75, None], [0.5, 0.4, 0.3]]
    assert done["rows_from_host"] == [0]
    assert done["ram_bytes"] == 1000 and done["flash_bytes"] == 2000 and done["counter"] == "instructions"
    assert "device row 0 of the accuracy matrix is the host reference's" in format_table(run.read_results())
    # a run folder without any device task has nothing to complete
    other = RunFolder(data.run_dir.parent / "empty", create=True)
    other.write_results({"method": _method()})
    assert complete_device_result(other.path) is False


def test_the_results_csv_follow_every_write(tmp_path):
    run = RunFolder(tmp_path / "r", create=True)
    run.write_results({"method": _method(), "baselines": {"naive": _method()}})
    header = run.matrix_csv_path.read_text().splitlines()[0]
    assert header == "run,after_task,task_0,task_1,task_2"
    assert [line.split(",")[0] for line in run.matrix_csv_path.read_text().splitlines()[1:]] == \
        ["method"] * 3 + ["naive"] * 3
    metrics = run.metrics_csv_path.read_text().splitlines()
    assert metrics[0].split(",")[:4] == ["run", "final_avg_accuracy", "bwt", "forgetting"]
    assert json.loads(run.results_path.read_text())["method"]["accuracy_matrix"] == HOST
