"""Device runs on the emulated board against their host reference.

    python benchmarks/device_runs.py [--datasets fashion-mnist digits] [--quick]

For each data set: `tinycil run` end to end on mps2_an500 (QEMU with -icount, so the board's
counter counts instructions), in a private copy of the firmware project. Writes
benchmarks/results/device_runs.json (each run's results.json, wall time per task, instructions
per training sample, link figures) and device_runs.md.
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

# (data set, extra prepare settings): Fashion-MNIST resized to 14x14, the design's benchmark.
SETTINGS = {
    "fashion-mnist": {"prepare_kwargs": {"resize": (14, 14), "max_train": 5000, "max_test": 1000}},
    "digits": {},
}


def private_project(tmp: Path) -> Path:
    shutil.copytree(ROOT / "firmware", tmp / "firmware",
                    ignore=shutil.ignore_patterns(".pio", "model_data.*"))
    shutil.copytree(ROOT / "boards", tmp / "boards")
    return tmp


def device_run(dataset: str, quick: bool) -> dict:
    from tinycil.cli.run import run_end_to_end

    with tempfile.TemporaryDirectory(prefix="tinycil-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["TINYCIL_STATE_DIR"] = str(tmp / "state")
        project = private_project(tmp / "project")
        started = time.monotonic()
        results = run_end_to_end(dataset, "mps2_an500", tmp / "run", root=project, quick=quick,
                                 icount=True, progress=False, echo=print,
                                 **SETTINGS.get(dataset, {}))
        results["wall_seconds"] = time.monotonic() - started
        return results


def summarise(results: dict) -> dict:
    tasks = results["device_log"]["tasks"]
    return {
        "dataset": results["dataset"],
        "final_avg_accuracy": {"device": results["device"]["final_avg_accuracy"],
                               "host_simulation": results["method"]["final_avg_accuracy"],
                               "host_twin": (results.get("twin") or {}).get("final_avg_accuracy")},
        "fidelity": results["fidelity"],
        "wall_seconds_per_task": {t: m["seconds"] for t, m in tasks.items()},
        "instructions_per_train_sample": {t: m["ticks_per_train_sample"] for t, m in tasks.items()},
        "samples_per_second": {t: m["samples_per_second"] for t, m in tasks.items()},
        "wall_seconds": results["wall_seconds"],
    }


def markdown(rows: list[dict]) -> str:
    out = ["# Device runs on the emulated board (mps2_an500, QEMU -icount)", "",
           "| data set | device final acc | host sim | host twin | max diff vs sim | "
           "instr. / train sample | wall s / task |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = r["final_avg_accuracy"]
        ips = list(r["instructions_per_train_sample"].values())
        wall = list(r["wall_seconds_per_task"].values())
        twin = f"{100 * acc['host_twin']:.1f}%" if acc["host_twin"] is not None else "-"
        out.append(f"| {r['dataset']} | {100 * acc['device']:.1f}% | "
                   f"{100 * acc['host_simulation']:.1f}% | {twin} | "
                   f"{100 * r['fidelity']['max_abs_diff_vs_simulation']:.2f} pt | "
                   f"{sum(ips) / len(ips):,.0f} | {sum(wall) / len(wall):.1f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["fashion-mnist"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs, rows = {}, []
    for name in args.datasets:
        res = device_run(name, args.quick)
        runs[name] = res
        rows.append(summarise(res))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "device_runs.json").write_text(json.dumps({"runs": runs, "summary": rows},
                                                             indent=2) + "\n")
    (RESULTS_DIR / "device_runs.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
