"""The versions recorded beside results (tinycil.software) and the pinned install (constraints.txt)."""

import re
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tinycil import software

ROOT = Path(__file__).resolve().parents[1]


def test_versions_are_those_of_the_running_packages():
    import keras
    import tensorflow as tf

    found = software.versions()
    assert found["numpy"] == np.__version__
    assert found["keras"] == keras.__version__
    assert tf.__version__ in (found.get("tensorflow-cpu"), found.get("tensorflow"))
    assert re.fullmatch(r"3\.\d+\.\d+", found["python"])
    assert "arm-none-eabi-gcc" not in found, "programs are asked for only with programs=True"


def test_the_cross_compilers_version_is_its_own_not_its_packaging_tag():
    # Debian's gcc prints "(15:12.2.rel1-1) 12.2.1 20221205": the version is 12.2.1
    full = subprocess.run(["arm-none-eabi-gcc", "-dumpfullversion"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert software.versions(programs=True)["arm-none-eabi-gcc"] == full


def test_qemus_version_is_recorded():
    out = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert software.versions(programs=True)["qemu-system-arm"] in out.splitlines()[0]


def test_a_missing_program_has_no_version():
    assert software.program_version(["tinycil-no-such-program", "--version"]) is None


def test_a_table_of_rows_says_which_versions_measured_which():
    a = {"python": "3.11.7", "keras": "3.15.1"}
    b = {"python": "3.11.7", "keras": "3.14.0"}
    assert software.describe_rows([a, a]) == "Python 3.11.7, Keras 3.15.1, every row"
    assert software.describe_rows([a, b, None]) == (
        "Python 3.11.7, Keras 3.15.1: 1 row; Python 3.11.7, Keras 3.14.0: 1 row; "
        "versions not recorded: 1 row")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_constraints_pin_every_dependency_inside_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = _pins()
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name]), \
            f"constraints.txt pins {req.name} {pins[name]}, outside pyproject's {req.specifier}"


@pytest.mark.parametrize("name", ["tensorflow-cpu", "keras", "numpy"])
def test_make_setup_installs_the_pinned_learning_stack(name):
    # the suite runs in the virtualenv make setup built: it must hold the pinned versions, or the
    # results it reproduces were measured with something else
    found = software.versions()
    if name not in found:
        pytest.skip(f"{name} is not installed (tensorflow instead of tensorflow-cpu)")
    assert found[name] == _pins()[canonicalize_name(name)]


def test_the_cpu_is_named_with_the_extensions_the_kernels_choose_by():
    text = ("processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f\n\n"
            "processor\t: 1\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f\n")
    assert software.cpu(text) == "Example CPU 9000 (avx2 fma avx512f)"
    assert software.cpu("model name : Old\nflags : fpu sse\n").startswith("Old (none of avx2")
    # this machine's own: every listed extension it has, and no other
    here = software.cpu()
    flags = set()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        listed = here[here.rindex("(") + 1:-1]
        named = set() if listed.startswith("none of") else set(listed.split())
        assert named == {f for f in software.CPU_FEATURES if f in flags}
