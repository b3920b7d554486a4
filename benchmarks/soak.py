"""Soak of the serial link: every device task of a run streamed through a damaging link.

    python benchmarks/soak.py [--rates 0.0001,0.001,0.01] [--epochs 4]

Runs digits end to end on the emulated board (mps2_an500, QEMU) once, then streams every device
task of that run again on a fresh board for each loss rate, through tinycil.link.faultproxy
between the host and QEMU, for the whole run and in both directions: bytes are damaged at the
rate per byte (drop, bit flip, duplicate, 1-32 garbage bytes before it: a quarter each) and held
back up to 20 ms at the rate per byte. A clean pass through the same proxy (rate 0) is the
reference. Per rate: tasks completed of all, wall time against the clean pass, whether every
accuracy row is identical to the clean one, faults injected and what the link did about them.
Writes benchmarks/results/soak.json and soak.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from tinycil import software  # noqa: E402


def soak_pass(run: Path, elf: Path, rate: float, seed: int) -> dict:
    from tinycil.deploy import emulator
    from tinycil.deploy.boards import load_board
    from tinycil.link.bridge import DeviceError, DeviceLink
    from tinycil.link.faultproxy import FaultProxy, Faults
    from tinycil.link.stream import RunData, stream_task

    data = RunData.load(run)
    q = rate / 4
    faults = Faults(drop=q, corrupt=q, duplicate=q, garbage=q, delay=rate, max_delay=0.02,
                    per_byte=True, limit=10**12, seed=seed)
    tasks, rows, error = [], {}, None
    link_totals: dict = {}
    t0 = time.monotonic()
    with emulator.emulator(load_board("mps2_an500"), elf) as state:
        with FaultProxy("127.0.0.1", state.port, faults) as proxy:
            try:
                with DeviceLink(proxy.url) as link:
                    for task in range(data.known, len(data.tasks)):
                        m = stream_task(run, link, task, progress=False, echo=lambda *_: None,
                                        board_hint="--board mps2_an500", data=data)
                        tasks.append(task)
                        rows[task] = m["row"]
                        for k, v in m["link"].items():
                            if isinstance(v, (int, float)) and k not in ("srtt", "rto",
                                                                        "loss_per_byte",
                                                                        "min_rx_free"):
                                link_totals[k] = link_totals.get(k, 0) + v
            except DeviceError as exc:
                error = str(exc)
            counts = proxy.counts
    return {"rate_per_byte": rate, "tasks_completed": len(tasks),
            "tasks_total": len(data.tasks) - data.known, "seconds": time.monotonic() - t0,
            "rows": {str(t): r for t, r in rows.items()}, "error": error,
            "faults": {"drop": counts.drop, "corrupt": counts.corrupt,
                       "duplicate": counts.duplicate, "garbage": counts.garbage,
                       "delay": counts.delay, "bytes": counts.bytes},
            "link": link_totals}


def main() -> None:
    from device_runs import private_project

    from tinycil.cli.run import run_end_to_end

    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="0.0001,0.001,0.01")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    with tempfile.TemporaryDirectory(prefix="tinycil-soak-") as tmp:
        tmp = Path(tmp)
        os.environ["TINYCIL_STATE_DIR"] = str(tmp / "state")
        project = private_project(tmp / "project")
        run_end_to_end("digits", "mps2_an500", tmp / "run", root=project, epochs=args.epochs,
                       distill_iters=10, progress=False, echo=print)
        elf = project / "firmware" / ".pio" / "build" / "mps2_an500" / "firmware.elf"
        passes = []
        for i, rate in enumerate([0.0] + rates):
            run = tmp / f"soak_{i}"
            shutil.copytree(tmp / "run", run)
            (run / "results.json").unlink(missing_ok=True)
            print(f"== soak at {rate:g} per byte", flush=True)
            passes.append(soak_pass(run, elf, rate, seed=1 + i))
            print(json.dumps({k: passes[-1][k] for k in ("tasks_completed", "tasks_total",
                                                         "seconds", "error")}), flush=True)

    clean = passes[0]
    for p in passes:
        p["identical_to_clean"] = (p["tasks_completed"] == p["tasks_total"]
                                   and p["rows"] == clean["rows"])
        p["time_vs_clean"] = p["seconds"] / clean["seconds"] if clean["seconds"] else None
    out = {"passes": passes,
           "note": "digits on the emulated board, every device task streamed through the fault "
                   "proxy in both directions for the whole run; damage (drop, bit flip, "
                   "duplicate, garbage: a quarter of the rate each) and delay (up to 20 ms) at "
                   "the given rate per byte; rate 0 is the clean reference through the same "
                   "proxy",
           "software": software.versions(programs=True)}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "soak.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# Link soak on the emulated board (digits, every device task)", "",
          "| loss per byte | tasks completed | wall time | vs clean | identical to clean | "
          "faults injected | retransmissions |", "|---|---|---|---|---|---|---|"]
    for p in passes:
        f = p["faults"]
        injected = f["drop"] + f["corrupt"] + f["duplicate"] + f["garbage"] + f["delay"]
        md.append(f"| {p['rate_per_byte']:g} | {p['tasks_completed']}/{p['tasks_total']} | "
                  f"{p['seconds']:.0f} s | {p['time_vs_clean']:.1f}x | "
                  f"{'yes' if p['identical_to_clean'] else 'no'} | {injected} | "
                  f"{p['link'].get('retransmissions', 0)} |")
    md += ["", out["note"], "", f"Software: {software.describe(out['software'])}.", ""]
    (RESULTS_DIR / "soak.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
