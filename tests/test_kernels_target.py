"""The kernel suite on the emulated Cortex-M7 (QEMU mps2-an500): the firmware build of the
kernels must reproduce the host build's outputs bit for bit; pass/fail is QEMU's exit status
(semihosting SYS_EXIT_EXTENDED)."""

import re

import pytest

from kernels_host.host_lib import kernels
from kernels_host.suite_data import build_suite
from kernels_host.target import TARGET_DIR, build_image, run_image, tools_available

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def suite():
    missing = tools_available()
    if missing:
        pytest.fail(missing)
    return build_suite(kernels())


def run_suite(source: str, out_dir):
    (out_dir / "kernel_suite_data.inc").write_text(source)
    elf = build_image(TARGET_DIR / "kernel_suite.cpp", [out_dir], out_dir)
    return run_image(elf, timeout=60)


def test_kernel_suite_passes_on_target(suite, tmp_path):
    status, out = run_suite(suite.source(), tmp_path)
    m = re.search(r"kernel suite: (\d+) cases, (\d+) failures", out)
    assert m, out
    assert status == 0, out
    assert int(m.group(1)) == len(suite.names) and len(suite.names) > 40
    assert int(m.group(2)) == 0


def test_kernel_suite_reports_a_wrong_expectation(suite, tmp_path):
    """A single flipped bit in one expected output must fail the run, with the case named."""
    source = suite.source()
    want = re.search(r"const int8_t (out\d+_y)_want\[\] = \{(-?\d+)", source)
    assert want
    first = int(want.group(2))
    flipped = source.replace(want.group(0), want.group(0)[: -len(want.group(2))]
                             + str(first ^ 1 if first != -128 else -127), 1)
    status, out = run_suite(flipped, tmp_path)
    assert status == 1, out
    assert "FAIL " in out and "failures" in out
