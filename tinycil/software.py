"""The software a result was measured with, recorded beside the result.

A training run is reproducible to the last digit under one install, but another release of
TensorFlow, Keras or numpy rounds a few operations differently, and a run of a thousand steps then
takes another path and ends some tenths of a point away. A number is traceable only with the
versions that produced it: run folders (config.json) and benchmark results record them.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from importlib import metadata

# The Python packages whose versions decide a result: the learning stack, the quantiser, the build.
PACKAGES = ("tinycil", "tensorflow-cpu", "tensorflow", "keras", "numpy", "ai-edge-litert",
            "platformio")
# The programs a firmware figure depends on: the cross compiler builds it, QEMU counts its work.
PROGRAMS = {"arm-none-eabi-gcc": ["arm-none-eabi-gcc", "--version"],
            "qemu-system-arm": ["qemu-system-arm", "--version"]}


def versions(programs: bool = False) -> dict[str, str]:
    """Python's and each installed package's version; with ``programs`` also the cross compiler's
    and QEMU's. What is not installed is left out (either tensorflow or tensorflow-cpu is)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if programs:
        for name, argv in PROGRAMS.items():
            version = program_version(argv)
            if version:
                found[name] = version
    return found


def program_version(argv: list[str]) -> str | None:
    """The first version number a program prints for ``--version`` (None when it is missing)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # a number standing alone: gcc's first line also carries a packaging tag like "(15:12.2.rel1-1)"
    match = re.search(r"(?<![\w:.])\d+\.\d+(\.\d+)?(?![\w.])", out.splitlines()[0] if out else "")
    return match.group(0) if match else None


# The instruction-set extensions TensorFlow's CPU kernels (oneDNN) choose their code paths by: the
# same install on a CPU with another set may sum in another order and end a run tenths away.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu(cpuinfo: str | None = None) -> str:
    """The processor and which of CPU_FEATURES it has, e.g. "Intel(R) Xeon(R) Processor (avx2 fma
    avx512f)"; ``cpuinfo`` is /proc/cpuinfo's text (read when None; where there is none, the
    platform's processor name alone)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return platform.processor() or platform.machine()
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    have = [f for f in CPU_FEATURES if f in flags]
    return f"{name} ({' '.join(have) if have else 'none of ' + ', '.join(CPU_FEATURES)})"


def describe(found: dict[str, str] | None) -> str:
    """One line for a Markdown result: "TensorFlow 2.21.0, Keras 3.15.1, numpy 2.4.6, Python 3.11.7"."""
    if not found:
        return "versions not recorded"
    labels = {"tensorflow-cpu": "TensorFlow", "tensorflow": "TensorFlow", "keras": "Keras",
              "numpy": "numpy", "python": "Python", "ai-edge-litert": "LiteRT",
              "platformio": "PlatformIO", "arm-none-eabi-gcc": "arm-none-eabi-gcc",
              "qemu-system-arm": "QEMU", "tinycil": "tinycil"}
    return ", ".join(f"{labels.get(k, k)} {v}" for k, v in found.items())


def describe_rows(records: list[dict | None]) -> str:
    """One line for a table whose rows were measured at different times (each row records its own
    versions): the versions shared by every row, or how many rows each set of versions measured."""
    groups: dict[str, int] = {}
    for found in records:
        key = describe(found)
        groups[key] = groups.get(key, 0) + 1
    if len(groups) <= 1:
        return f"{next(iter(groups), describe(None))}, every row"
    return "; ".join(f"{key}: {n} row{'s' if n > 1 else ''}" for key, n in groups.items())
