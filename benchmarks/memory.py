"""RAM and flash of each demo model against the STM32F746's 320 KB / 1 MB budget.

For every demo model: prepare a quick run, export it (memory plan), then build the firmware with
that export for the board and read the linker's figures (the final judge). Writes
benchmarks/results/memory.json and memory.md.

    python benchmarks/memory.py [--board nucleo_f746zg]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMOS = [  # name, dataset, family, prepare options
    ("digits mlp", "digits", "mlp", {}),
    ("fashion-mnist 14x14 cnn2d", "fashion-mnist", "cnn2d", {"max_train": 3000, "max_test": 500}),
    ("basic-motions cnn1d", "basic-motions", "cnn1d", {"n_tasks": 2, "batch_new": 8, "batch_replay": 8}),
]
RUNTIME_API = ["tc_rt_init", "tc_rt_describe", "tc_rt_set_training", "tc_rt_begin_task",
               "tc_rt_train_samples", "tc_rt_add_buffer_samples", "tc_rt_predict", "tc_rt_stats"]


def link_figures(board: str, work: Path) -> dict:
    """Build the firmware with the export in firmware/generated/ and read the linker's usage."""
    ini = (ROOT / "firmware" / "platformio.ini").read_text()
    keep = " ".join(f"-Wl,--undefined={s}" for s in RUNTIME_API)
    ini = ini.replace("build_flags = -I generated", f"build_flags = -I generated {keep}\nlib_deps = runtime")
    conf = work / "platformio.ini"
    conf.write_text(ini)
    env = dict(os.environ, PLATFORMIO_BUILD_DIR=str(work / "build"),
               PLATFORMIO_SETTING_ENABLE_TELEMETRY="No", PLATFORMIO_DISABLE_UPGRADE_CHECK="true")
    pio = shutil.which("pio", path=str(Path(sys.executable).parent)) or "pio"
    proc = subprocess.run([pio, "run", "-d", str(ROOT / "firmware"), "-c", str(conf), "-e", board],
                          capture_output=True, text=True, timeout=600, env=env)
    out = {"build_ok": proc.returncode == 0}
    for region in ("FLASH", "RAM"):
        m = re.search(rf"{region}:\s+(\d+) B", proc.stdout)
        out[f"{region.lower()}_linked"] = int(m.group(1)) if m else None
    if proc.returncode != 0:
        out["build_error"] = (proc.stdout + proc.stderr)[-800:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="nucleo_f746zg")
    args = ap.parse_args()
    from tinycil.deploy.export import GENERATED_FILES, ExportError, export_run
    from tinycil.deploy.memplan import MemoryPlanError
    from tinycil.learn.prepare import prepare_run

    gen = ROOT / "firmware" / "generated"
    saved = {f: (gen / f).read_bytes() for f in GENERATED_FILES if (gen / f).exists()}
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, dataset, family, opts in DEMOS:
                run = Path(tmp) / dataset
                row = {"model": name, "dataset": dataset, "family": family, "board": args.board}
                prepare_run(dataset, run, family=family, quick=True, progress=False, **opts)
                try:
                    res = export_run(run, args.board)
                except (ExportError, MemoryPlanError) as exc:
                    row["error"] = str(exc)
                    rows.append(row)
                    print(f"{name}: {exc}")
                    continue
                mem = res.memory
                row.update(signature=res.signature_hex, ram_planned=mem["ram_used"],
                           flash_planned=mem["flash_used"], ram_total=mem["ram_total"],
                           flash_total=mem["flash_total"], ram_parts=mem["ram"],
                           flash_parts=mem["flash"], arena_bytes=res.manifest["arena_bytes"],
                           buffer=res.manifest["buffer"])
                work = Path(tmp) / f"build-{dataset}"
                work.mkdir()
                row.update(link_figures(args.board, work))
                rows.append(row)
                print(f"{name}: RAM planned {row['ram_planned']} linked {row.get('ram_linked')}, "
                      f"flash planned {row['flash_planned']} linked {row.get('flash_linked')}")
    finally:
        for f in GENERATED_FILES:
            if f in saved:
                (gen / f).write_bytes(saved[f])
            elif (gen / f).exists():
                (gen / f).unlink()
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps({"board": args.board, "models": rows}, indent=2) + "\n")
    lines = [f"# RAM and flash of the demo models ({args.board}: 320 KB RAM, 1 MB flash)", "",
             "Planned: tinycil.deploy.memplan before the build (arena for the final grown tail, replay RAM "
             "area, protocol buffers, stack). Linked: the linker's figures for the firmware built "
             "with the export (runtime linked in).", "",
             "| model | RAM planned | RAM linked | flash planned | flash linked | arena | buffer (flash + RAM slots) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | not exported: {r['error'][:120]} | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['ram_planned']} | {r.get('ram_linked')} | {r['flash_planned']} | "
                     f"{r.get('flash_linked')} | {r['arena_bytes']} | {r['buffer']['flash_samples']} + "
                     f"{r['buffer']['ram_capacity']} |")
    (out / "memory.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
