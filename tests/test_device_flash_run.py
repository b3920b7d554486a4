"""`tinycil flash --board B --run RUN`: the run's model is exported, built and flashed (the
emulated board restarts QEMU with it), and INFO then describes that model; a run that does not fit
the board is refused by the memory plan before anything is built.

The commands run against a private copy of the project (TINYCIL_HOME), so the checkout's
firmware/generated/ is never changed. Every QEMU started here is ended by its pid.
"""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from test_runtime_twin import prepared_digits_run
from tinycil.cli import main
from helpers import emulator_home

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm"),
]

BOARD = "mps2_an500"


@pytest.fixture
def home(root, tmp_path, monkeypatch):
    """TINYCIL_HOME and TINYCIL_STATE_DIR in the test's folder; the emulator is killed at the end."""
    yield from emulator_home(root, tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return prepared_digits_run(tmp_path_factory)


def test_flash_run_then_info_shows_the_runs_model(home, digits_run):
    runner = CliRunner()
    flashed = runner.invoke(main, ["flash", "--board", BOARD, "--run", str(digits_run)])
    assert flashed.exit_code == 0, flashed.output
    manifest = json.loads((digits_run / "export" / "manifest.json").read_text())
    sig = manifest["signature"]
    assert f"model signature {sig}" in flashed.output
    assert f"model {sig}" in flashed.output  # the device's own answer after the restart
    assert (home / "firmware" / "generated" / "model_data.h").is_file()

    shown = runner.invoke(main, ["info", "--board", BOARD, "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["model_signature"] == sig
    assert info["input_type_name"] == "INT8"
    assert info["input_shape"] == manifest["input_shape"]
    assert info["classes_max"] == manifest["classes_max"] == 10
    assert info["classes_seen"] == manifest["plan"][manifest["known_tasks"] - 1]["classes_seen"]
    buffer = manifest["buffer"]
    assert info["buffer_capacity"] == buffer["flash_samples"] + buffer["ram_capacity"]
    assert info["buffer_fill"] == buffer["flash_samples"]
    assert info["buffer_store_name"] == buffer["store"].upper() == "INPUTS"
    assert info["persist"] == 0  # OFF: built without --persist

    text = runner.invoke(main, ["info", "--board", BOARD])
    assert text.exit_code == 0, text.output
    assert f"signature {sig}" in text.output
    assert f"int8 {manifest['input_shape']}" in text.output
    assert f"{info['classes_seen']} seen of 10" in text.output
    assert f"{info['buffer_fill']} / {info['buffer_capacity']} samples (inputs)" in text.output
    assert "not kept across resets" in text.output

    stopped = runner.invoke(main, ["stop"])
    assert stopped.exit_code == 0, stopped.output


def test_a_run_that_does_not_fit_is_refused_before_building(home, digits_run):
    # The same run against a board with a tenth of the RAM: the memory plan must refuse it.
    manifest = home / "boards" / f"{BOARD}.json"
    board = json.loads(manifest.read_text())
    board["tinycil"]["memory"]["ram_bytes"] = 32 * 1024
    manifest.write_text(json.dumps(board))
    out = CliRunner().invoke(main, ["flash", "--board", BOARD, "--run", str(digits_run)])
    assert out.exit_code != 0
    assert f"run {digits_run.name} does not fit {BOARD}" in out.output
    assert "bytes too many" in out.output and "Prepare the run again" in out.output
    assert "Building firmware" not in out.output
    assert not (home / "firmware" / ".pio").exists()
    assert not (home / "firmware" / "generated" / "model_data.h").exists()


def test_flash_run_refuses_a_folder_that_is_not_a_run(home, tmp_path):
    out = CliRunner().invoke(main, ["flash", "--board", BOARD, "--run", str(tmp_path / "nothing")])
    assert out.exit_code != 0
    assert "is not a prepared run" in out.output and "tinycil prepare" in out.output


def test_persist_counts_the_learned_state_against_the_slots(home, digits_run):
    # Slots too small for the run's learned state: fine without --persist, refused with it.
    manifest = home / "boards" / f"{BOARD}.json"
    board = json.loads(manifest.read_text())
    board["tinycil"]["persist"]["slot_bytes"] = 1024
    manifest.write_text(json.dumps(board))
    out = CliRunner().invoke(main, ["flash", "--board", BOARD, "--run", str(digits_run),
                                    "--persist"])
    assert out.exit_code != 0
    assert "persistence: the learned state needs" in out.output
    assert "a slot holds 1024" in out.output and "flash without --persist" in out.output
    assert "Building firmware" not in out.output
