"""Building through the real PlatformIO project: sizes reported, overflows explained."""

import shutil

import pytest

from tinycil.deploy.boards import load_board
from tinycil.deploy.build import BuildError, build, build_env

pytestmark = pytest.mark.skipif(not shutil.which("arm-none-eabi-g++"),
                                reason="needs the Arm cross compiler")


@pytest.mark.slow
def test_build_reports_the_sizes_of_the_emulated_board(root):
    board = load_board("mps2_an500")
    result = build(board)
    assert result.elf == root / "firmware" / ".pio" / "build" / board.id / "firmware.elf"
    assert result.elf.is_file() and result.bin.is_file()
    assert result.ram_total == board.ram_bytes and result.flash_total == board.flash_bytes
    assert 0 < result.ram_used < result.ram_total
    # the flash use is the raw image PlatformIO wrote (up to alignment padding)
    assert abs(result.bin.stat().st_size - result.flash_used) <= 16
    assert "RAM" in result.size_line() and "flash" in result.size_line()


def test_extra_flags_are_appended_to_platformio_build_flags(monkeypatch):
    monkeypatch.setenv("PLATFORMIO_BUILD_FLAGS", "-DFIRST=1")
    env = build_env("-DSECOND=2")
    assert env["PLATFORMIO_BUILD_FLAGS"] == "-DFIRST=1 -DSECOND=2"
    assert env["PLATFORMIO_SETTING_ENABLE_TELEMETRY"] == "No"
    assert env["PLATFORMIO_DISABLE_UPGRADE_CHECK"] == "true"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ram_overflow_fails_the_build_with_what_to_shrink(root, tmp_path, monkeypatch):
    # A copy of the project whose firmware holds 400 KB of static RAM: more than the board has.
    project = tmp_path / "project"
    shutil.copytree(root / "boards", project / "boards")
    shutil.copytree(root / "firmware", project / "firmware", symlinks=True,
                    ignore=shutil.ignore_patterns(".pio"))
    (project / "firmware" / "src" / "overflow_probe.cpp").write_text(
        "// more static RAM than the 320 KB budget\n"
        "extern \"C\" { char tc_overflow_probe[400 * 1024]; }\n")
    monkeypatch.setenv("TINYCIL_HOME", str(project))
    board = load_board("mps2_an500")
    # --undefined keeps the array alive through --gc-sections (and exercises the flag passthrough)
    with pytest.raises(BuildError) as err:
        build(board, extra_flags="-Wl,--undefined=tc_overflow_probe")
    text = str(err.value)
    first = text.splitlines()[0]
    assert "more RAM than mps2_an500 has (327,680 bytes)" in first
    assert "replay buffer" in first
    assert "--- last lines of the build output ---" in text
    assert "overflowed by" in text
