"""An installed tinycil's project copy and emulator state: found from any folder, refreshed without
losing the user's build or exported model."""

import json

from tinycil.deploy import emulator, workspace
from tinycil.deploy.boards import project_root


def _project(folder, files):
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return workspace.shipped_files(folder)


def test_shipped_files_leave_out_build_output_and_the_exported_model(tmp_path):
    files = _project(tmp_path, {"boards/b.json": "{}", "firmware/platformio.ini": "[env]",
                                "firmware/.pio/build/x/firmware.elf": "elf",
                                "firmware/generated/model_data.h": "model",
                                "firmware/generated/README.md": "what goes here",
                                "examples/app/src/main.cpp": "int main() {}",
                                "examples/app/.pio/build/x/firmware.elf": "elf",
                                "examples/app/generated/model_data.cpp": "model",
                                "tinycil/__init__.py": "not part of the firmware project"})
    assert sorted(files) == ["boards/b.json", "examples/app/src/main.cpp",
                             "firmware/generated/README.md", "firmware/platformio.ini"]


def test_sync_refreshes_changed_files_and_keeps_build_and_model(tmp_path):
    source, target = tmp_path / "v1", tmp_path / "work"
    files = _project(source, {"boards/b.json": "{}", "firmware/platformio.ini": "[env] v1",
                              "firmware/src/old.cpp": "int old;"})
    assert workspace.sync(files, source, target) is True
    assert workspace.sync(files, source, target) is False  # up to date: nothing to do
    # the user builds and exports into the work copy
    (target / "firmware/.pio/build").mkdir(parents=True)
    (target / "firmware/.pio/build/firmware.elf").write_text("elf")
    (target / "firmware/generated").mkdir()
    (target / "firmware/generated/model_data.cpp").write_text("model")
    # a newer tinycil ships a changed file, a new one, and no longer old.cpp
    source2 = tmp_path / "v2"
    files2 = _project(source2, {"boards/b.json": "{}", "firmware/platformio.ini": "[env] v2",
                                "firmware/src/new.cpp": "int fresh;"})
    assert workspace.sync(files2, source2, target) is True
    assert (target / "firmware/platformio.ini").read_text() == "[env] v2"
    assert (target / "firmware/src/new.cpp").is_file()
    assert not (target / "firmware/src/old.cpp").exists()
    assert (target / "firmware/.pio/build/firmware.elf").read_text() == "elf"
    assert (target / "firmware/generated/model_data.cpp").read_text() == "model"
    assert json.loads((target / workspace.STAMP).read_text()) == files2


def test_state_folder_is_per_user_and_the_same_from_every_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYCIL_STATE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    seen = set()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        seen.add(emulator.state_path())
    assert seen == {tmp_path / "xdg-state" / "tinycil" / "state.json"}
    monkeypatch.delenv("XDG_STATE_HOME")
    assert emulator.state_dir() == tmp_path / "home" / ".local" / "state" / "tinycil"


def test_a_checkout_is_its_own_project(monkeypatch):
    monkeypatch.delenv("TINYCIL_HOME", raising=False)
    root = project_root()
    assert (root / "boards").is_dir() and (root / "firmware" / "platformio.ini").is_file()
    assert (root / "tinycil" / "deploy" / "workspace.py").is_file()
