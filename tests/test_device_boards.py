"""The board catalogue and the `tinycil boards` / `tinycil build` errors."""

import json

import pytest
from click.testing import CliRunner

from tinycil.deploy.boards import BoardError, list_boards, load_board, project_root
from tinycil.cli import main


def test_catalogue_reads_the_top_level_boards_folder(root):
    ids = [b.id for b in list_boards()]
    assert ids == sorted(p.stem for p in (root / "boards").glob("*.json"))
    assert {"nucleo_f746zg", "mps2_an500"} <= set(ids)
    assert project_root() == root


def test_both_boards_share_the_stm32f746_budget(root):
    nucleo, emulated = load_board("nucleo_f746zg"), load_board("mps2_an500")
    for board in (nucleo, emulated):
        manifest = json.loads((root / "boards" / f"{board.id}.json").read_text())
        assert board.flash_bytes == manifest["upload"]["maximum_size"] == 1024 * 1024
        assert board.ram_bytes == manifest["upload"]["maximum_ram_size"] == 320 * 1024
    assert emulated.emulated and emulated.qemu_machine == "mps2-an500"
    assert emulated.counter == "instructions" and emulated.flash_methods == ()
    assert not nucleo.emulated and nucleo.qemu_machine is None
    assert nucleo.counter == "cycles" and nucleo.f_cpu == 216_000_000
    assert set(nucleo.flash_methods) == {"openocd", "st-flash", "mass-storage"}
    assert nucleo.mass_storage_label == "NODE_F746ZG"


def test_unknown_board_names_the_known_ones_and_the_likely_one():
    with pytest.raises(BoardError) as err:
        load_board("mps2-an500")
    text = str(err.value)
    assert "unknown board 'mps2-an500'" in text
    assert "Did you mean 'mps2_an500'?" in text
    assert "nucleo_f746zg" in text


def test_unknown_board_without_a_close_match():
    with pytest.raises(BoardError) as err:
        load_board("esp32")
    assert "Did you mean" not in str(err.value)
    assert "mps2_an500" in str(err.value)


def _manifest(extra=True):
    data = {"name": "Test board", "vendor": "Nobody", "url": "https://example.org",
            "build": {"cpu": "cortex-m4", "f_cpu": "80000000L"},
            "upload": {"maximum_size": 262144, "maximum_ram_size": 65536, "protocol": "openocd"}}
    if extra:
        data["tinycil"] = {"emulated": False, "description": "d", "serial": {"baudrate": 921600},
                           "memory": {"flash_bytes": 262144, "ram_bytes": 65536, "stack_bytes": 4096},
                           "counter": "cycles", "flash_methods": ["openocd"], "qemu": None}
    return data


def test_tinycil_home_points_at_another_project(tmp_path, monkeypatch):
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "test_m4.json").write_text(json.dumps(_manifest()))
    monkeypatch.setenv("TINYCIL_HOME", str(tmp_path))
    board = load_board("test_m4")
    assert (board.baudrate, board.f_cpu, board.ram_bytes, board.stack_bytes) == (921600, 80_000_000, 65536, 4096)
    assert [b.id for b in list_boards()] == ["test_m4"]


def test_manifest_without_tinycil_object_is_refused(tmp_path, monkeypatch):
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "plain.json").write_text(json.dumps(_manifest(extra=False)))
    monkeypatch.setenv("TINYCIL_HOME", str(tmp_path))
    with pytest.raises(BoardError, match='no "tinycil" object'):
        load_board("plain")


def test_tinycil_home_without_boards_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYCIL_HOME", str(tmp_path))
    with pytest.raises(BoardError, match="has no boards/ folder"):
        list_boards()


def test_boards_command_table_and_json():
    runner = CliRunner()
    result = runner.invoke(main, ["boards"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "EMULATED"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert "yes" in by_id["mps2_an500"] and "320 KB" in by_id["mps2_an500"]
    assert "openocd, st-flash, mass-storage" in by_id["nucleo_f746zg"]

    result = runner.invoke(main, ["boards", "--json"])
    assert result.exit_code == 0, result.output
    data = {b["id"]: b for b in json.loads(result.output)}
    assert data["mps2_an500"]["emulated"] is True
    assert data["nucleo_f746zg"]["flash_bytes"] == 1048576


def test_build_unknown_board_fails_clearly():
    result = CliRunner().invoke(main, ["build", "--board", "nucleo_f746"])
    assert result.exit_code != 0
    assert "unknown board 'nucleo_f746'" in result.output
    assert "Did you mean 'nucleo_f746zg'?" in result.output
