"""Two-slot persistence of the learned state (firmware/lib/persist), built with the host g++ and
run against an in-memory NOR flash (tests/persist_host/nor_sim.h). The library, the runtime and
the kernels are the firmware's own sources; only the flash medium is simulated."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from persist_host import tiny_model
from tinycil.deploy import memplan
from tinycil.deploy.boards import load_board as get_board

pytestmark = pytest.mark.slow  # the sanitised host build takes about 20 s

HOST_FLAGS = ["-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fno-exceptions",
              "-fno-rtti", "-ffp-contract=off", "-fsanitize=address,undefined",
              "-fno-sanitize-recover=undefined"]


@pytest.fixture(scope="module")
def harness(root, tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.fail("g++ not found: install the host C++ compiler (Debian: apt-get install g++)")
    tmp = tmp_path_factory.mktemp("persist")
    model = tiny_model.write(tmp / "model")
    lib = root / "firmware" / "lib"
    sources = [root / "tests" / "persist_host" / "persist_harness.cpp",
               lib / "persist" / "tc_persist.cpp", lib / "persist" / "tc_persist_runtime.cpp",
               lib / "protocol" / "tc_crc32.cpp",
               *sorted((lib / "runtime").glob("*.cpp")), *sorted((lib / "kernels").glob("*.cpp"))]
    includes = [model, root / "tests" / "persist_host", lib / "persist", lib / "runtime",
                lib / "kernels", lib / "protocol"]
    exe = tmp / "persist_harness"
    cmd = ["g++", *HOST_FLAGS, *(f"-I{d}" for d in includes), *map(str, sources), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


def run(exe, *args) -> str:
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "PASSED" in proc.stdout, out[-6000:]
    assert "FAIL" not in proc.stdout, out[-6000:]
    return proc.stdout


def test_round_trip_alternates_slots_and_refuses_oversized(harness):
    assert "ok roundtrip" in run(harness, "roundtrip")


def test_power_cut_at_every_byte_of_a_save_keeps_the_previous_state(harness):
    out = run(harness, "torn", 600, 2)
    lines = re.findall(r"ok torn (\S+) cuts=(\d+) steps=(\d+) previous=(\d+) next=(\d+)", out)
    assert len(lines) == 4  # two scenarios x two seeds
    for name, cuts, steps, previous, nxt in lines:
        cuts, steps, previous, nxt = map(int, (cuts, steps, previous, nxt))
        assert cuts == steps + 1  # every byte step of the save, and the uncut save
        # Only the save whose last byte completed may load the new state.
        assert previous >= steps - 1 and 1 <= nxt <= 2


def test_state_of_another_model_is_ignored(harness):
    assert "ok signature" in run(harness, "signature")


def test_every_corrupted_bit_of_the_newest_slot_falls_back_to_the_older(harness):
    out = run(harness, "corrupt")
    assert int(re.search(r"flips=(\d+)", out).group(1)) == 8 * (32 + 400)


def test_sequence_number_wraps(harness):
    out = run(harness, "wrap")
    assert "first=4294967294" in out


def test_runtime_state_survives_a_reboot_and_torn_saves(harness):
    out = run(harness, "runtime", 1)
    m = re.search(r"state_bytes=(\d+) cuts=(\d+) steps=(\d+) max_state_bytes=(\d+)", out)
    state, cuts, steps, largest = map(int, m.groups())
    assert cuts == steps - 1  # a cut at every byte step but the last
    # The memory plan's slot budget is the runtime's own largest state plus the slot header.
    assert memplan.persist_state_bytes(tiny_model.footprint()) == largest + 32


def test_memory_plan_counts_the_slots(root):
    fp = tiny_model.footprint()
    for board_id in ("nucleo_f746zg", "mps2_an500"):
        board = get_board(board_id)
        off = memplan.plan_memory(fp, board)
        on = memplan.plan_memory(fp, board, persist=True)
        assert off.flash_total == 1024 * 1024 and off.persist is None
        assert on.flash_total == 512 * 1024
        assert on.persist["slot_bytes"] == 256 * 1024 and on.fits
    # A state larger than a slot is refused with what to shrink.
    big = memplan.Footprint(**{**fp.__dict__, "tail": ((64, 256), (256, 200)),
                               "buffer_ram_capacity": 200, "input_size": 64})
    with pytest.raises(memplan.MemoryPlanError, match="persistence: the learned state needs"):
        memplan.check_fits(big, get_board("nucleo_f746zg"), persist=True)


def test_linker_scripts_and_manifests_agree(root):
    """The slot addresses live in the linker scripts (the firmware's truth) and in the board
    manifests (the host's): they must be the same."""
    for board_id in ("nucleo_f746zg", "mps2_an500"):
        ld = (root / "firmware" / "platform" / "ldscripts" / f"{board_id}.ld").read_text()
        layout = memplan.persist_layout(get_board(board_id))
        for i, address in enumerate(layout["slot_addresses"]):
            assert re.search(rf"__persist_slot{i} = 0x{address:08X};", ld, re.I), (board_id, i)
        assert f"__persist_slot_size = {layout['slot_bytes'] // 1024}K;" in ld
        assert f"DEFINED(__tc_persist) ? {layout['flash_reserved_bytes'] // 1024}K : 0" in ld


def test_a_save_that_fails_keeps_both_slots_with_power_cut_at_every_step(harness):
    """Nothing is erased before the producer succeeded: a save refused for a half-way failure,
    a state too large or a non-finite state leaves both slots byte for byte (the backup too); a
    producer that fails after the erase (it wrote something else the second time) leaves the
    newest state loadable, with the power cut at every byte step of that save."""
    out = run(harness, "failing")
    lines = dict((name, (int(cuts), int(steps))) for name, cuts, steps in
                 re.findall(r"ok failing (\S+) cuts=(\d+) steps=(\d+)", out))
    assert set(lines) == {"half-way", "too-large", "not-finite", "unstable"}
    for name in ("half-way", "too-large", "not-finite"):
        assert lines[name] == (1, 0)  # no flash step at all before the refusal
    cuts, steps = lines["unstable"]
    assert steps > 600 and cuts == steps + 1


def test_a_save_never_overwrites_the_state_the_runtime_runs(harness):
    """The newest slot holds a state the runtime refused at boot, so it runs the older one; the
    next save overwrites the refused slot, with the power cut at every byte step."""
    out = run(harness, "running", 1)
    cuts, steps, old, new = map(int, re.search(
        r"ok running cuts=(\d+) steps=(\d+) old=(\d+) new=(\d+)", out).groups())
    assert cuts == steps + 1 and old >= steps - 1 and new >= 1 and old + new == cuts


def test_a_diverged_state_is_never_saved(harness):
    """lr = 1e30 drives the weights to NaN/infinity: the save is refused before the flash is
    touched, and the last good state still loads."""
    assert "ok not_finite" in run(harness, "not_finite")
