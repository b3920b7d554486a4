"""Builds tests/fuzz_host/device_host: the firmware's serial front end (firmware/src), protocol,
learner library, runtime and kernels for the host, with the tiny test model of tests/persist_host, under
AddressSanitizer and UndefinedBehaviorSanitizer (any report aborts)."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

FLAGS = ["-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-fno-exceptions", "-fno-rtti",
         "-ffp-contract=off", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", '-DTC_BUILD_ID="host"']


class BuildError(RuntimeError):
    pass


def sources(root: Path) -> list[Path]:
    fw = root / "firmware"
    lib = fw / "lib"
    return [HERE / "device_host.cpp", HERE / "host_bsp.cpp",
            *(fw / "src" / n for n in ("main.cpp", "handlers.cpp", "learn_handlers.cpp",
                                       "learned_state.cpp")),
            *sorted((lib / "protocol").glob("*.cpp")), *sorted((lib / "runtime").glob("*.cpp")),
            *sorted((lib / "kernels").glob("*.cpp")), lib / "learner" / "tc_learner.cpp",
            lib / "persist" / "tc_persist.cpp", lib / "persist" / "tc_persist_runtime.cpp"]


def build(root: Path, out_dir: Path) -> Path:
    """Compiles (two at a time) and links; returns the executable."""
    import sys

    sys.path.insert(0, str(root / "tests"))
    from persist_host import tiny_model

    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise BuildError(f"{cxx} not found: install the host C++ compiler (apt-get install g++)")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = tiny_model.write(out_dir / "model")
    lib = root / "firmware" / "lib"
    includes = [model, HERE, root / "firmware" / "src", lib / "bsp", lib / "protocol",
                lib / "runtime", lib / "kernels", lib / "persist", lib / "learner"]
    inc = [f"-I{d}" for d in includes]

    def compile_one(src: Path) -> Path:
        obj = out_dir / (src.parent.name + "_" + src.stem + ".o")
        extra = ["-Dmain=tc_firmware_main"] if src.name == "main.cpp" else []
        proc = subprocess.run([cxx, *FLAGS, *extra, *inc, "-c", str(src), "-o", str(obj)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"{src}:\n{proc.stderr[-4000:]}")
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        objects = list(pool.map(compile_one, sources(root)))
    exe = out_dir / "device_host"
    proc = subprocess.run([cxx, *FLAGS, *map(str, objects), "-o", str(exe)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise BuildError(proc.stderr[-4000:])
    return exe


if __name__ == "__main__":
    import sys

    print(build(HERE.parent.parent, Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fuzz_host")))
