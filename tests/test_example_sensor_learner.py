"""examples/sensor_learner: tinycil's learner as a PlatformIO library inside an application that
learns two new classes from frames its own "sensor" produces (no host streaming). The example
builds for both boards; on the emulated board it must learn the new classes (its exit code says
so) from a model exported by the ordinary path (a quick digits run), and its learned state must
survive a save, a restart and a restore."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from tinycil.deploy.build import build_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("arm-none-eabi-g++")
                                      and shutil.which("qemu-system-arm")),
                                 reason="needs the Arm cross compiler and QEMU")]

@pytest.fixture(scope="module")
def example(root, tmp_path_factory):
    """The example in the session's project copy, with a digits model exported into its
    generated/ folder as a user does it (`tinycil export RUN --board B --into DIR`)."""
    from click.testing import CliRunner

    from tinycil.cli import main
    from tinycil.learn.prepare import prepare_run

    run = tmp_path_factory.mktemp("example_run") / "digits"
    prepare_run("digits", run, n_tasks=5, known=1, quick=True, progress=False, seed=0)
    project = root / "examples" / "sensor_learner"
    result = CliRunner().invoke(main, ["export", str(run), "--board", "mps2_an500", "--host-only",
                                       "--into", str(project / "generated")])
    assert result.exit_code == 0, result.output
    for name in ("model_data.h", "model_data.cpp"):
        assert (project / "generated" / name).is_file()
    return project


def _build(project, board):
    proc = subprocess.run([sys.executable, "-m", "platformio", "run", "-d", str(project), "-e", board],
                          capture_output=True, text=True, env=build_env(), timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    elf = project / ".pio" / "build" / board / "firmware.elf"
    assert elf.is_file()
    return elf


def _copy_with_library(example, tmp, library: str):
    """The example copied elsewhere, its learner dependency given as `library` (a lib_deps
    entry; ${tinycil.path} is the tinycil folder)."""
    project = tmp / "app"
    shutil.copytree(example, project, ignore=shutil.ignore_patterns(".pio"))
    ini = (project / "platformio.ini").read_text()
    symlink = "    symlink://${tinycil.path}/firmware/lib\n"
    assert symlink in ini
    ini = ini.replace("path = ../..", f"path = {example.parent.parent}")
    (project / "platformio.ini").write_text(ini.replace(symlink, f"    {library}\n"))
    return project


def test_example_builds_for_the_real_board_with_the_library_as_a_copied_folder(example, tmp_path):
    # lib_deps = file://<tinycil>/firmware/lib: PlatformIO copies the folder into .pio/libdeps,
    # so the library must build from the copy alone (the emulated board's build, with the
    # symlink the example ships, is part of the next test).
    project = _copy_with_library(example, tmp_path, "file://${tinycil.path}/firmware/lib")
    _build(project, "nucleo_f746zg")
    copied = project / ".pio" / "libdeps" / "nucleo_f746zg" / "tinycil-learner"
    assert (copied / "library.json").is_file() and (copied / "learner" / "tc_learner.h").is_file()
    assert not (copied / "learner").is_symlink()


def test_a_git_repository_url_resolves_the_learner_library(example, tmp_path):
    # lib_deps = <repository URL>: PlatformIO clones the repository and takes the library.json
    # at its top. A real remote cannot be reached here; a local repository through git+file://
    # goes through the same clone. The build itself is the folder's (the manifests agree:
    # tests/test_learner_library.py).
    if shutil.which("git") is None:
        pytest.skip("needs git")
    tinycil = example.parent.parent
    repo = tmp_path / "tinycil.git"
    shutil.copytree(tinycil / "firmware" / "lib", repo / "firmware" / "lib")
    shutil.copy(tinycil / "library.json", repo / "library.json")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "learner"]):
        subprocess.run(git + args, check=True, capture_output=True)
    project = _copy_with_library(example, tmp_path, f"git+file://{repo}")
    proc = subprocess.run([sys.executable, "-m", "platformio", "pkg", "install", "-d", str(project),
                           "-e", "nucleo_f746zg"], capture_output=True, text=True,
                          env=build_env(), timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    cloned = project / ".pio" / "libdeps" / "nucleo_f746zg" / "tinycil-learner"
    assert json.loads((cloned / "library.json").read_text())["name"] == "tinycil-learner"
    assert (cloned / "firmware" / "lib" / "learner" / "tc_learner.h").is_file()


def test_example_learns_new_classes_on_the_emulated_board(example):
    elf = _build(example, "mps2_an500")
    # Ends by itself through semihosting; the timeout only guards against a hang.
    proc = subprocess.run(["qemu-system-arm", "-M", "mps2-an500", "-display", "none", "-monitor",
                           "none", "-nographic", "-semihosting-config", "enable=on,target=native",
                           "-kernel", str(elf), "-serial", "stdio"],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    out = proc.stdout
    before = re.search(r"accuracy on the new classes before learning: (\d+)%", out)
    after = re.search(r"accuracy on the new classes after learning: (\d+)%", out)
    assert before and after, out + proc.stderr
    assert int(before.group(1)) == 0, out  # classes the model has never had cannot be predicted
    assert int(after.group(1)) >= 80, out
    assert re.search(r"\d+ SGD steps", out) and " 0 SGD steps" not in out, out
    assert "head over 4 classes" in out, out  # the run's default: the device fitted its head
    # saved, back to the exported model by a restart, restored: the same predictions again
    saved = re.search(r"learned state of (\d+) bytes saved; after a restart (\d+)%, restored (\d+)%", out)
    assert saved and int(saved.group(1)) > 0, out
    assert int(saved.group(2)) == 0 and int(saved.group(3)) == int(after.group(1)), out
    assert "PASS" in out and proc.returncode == 0, out
