"""Device runs on the emulated board on the real scenario, beside the host method and baselines.

    python benchmarks/device_runs.py [--runs fashion-mnist:0 fashion-mnist:1 digits:0 ...] [--quick]

Each run is `tinycil run --board mps2_an500` end to end (QEMU with -icount, so the board's counter
counts instructions), in a private copy of the firmware project, with the default options: every
training sample of every field task is streamed, the whole test set is evaluated, the replay
buffer keeps 1% of each task's full training data, and the trainable part is the memory plan's
auto cut. `--quick` subsamples the data (QUICK_SUBSAMPLE) and shortens training for a smoke
run; the subsample is stated in every table and file that shows its numbers.

Writes benchmarks/results/device_runs.json (each run's results.json, its configuration, wall
time per task, instructions per training sample) and device_runs.md: one table with the device
beside the host twin, the numpy reference and the host study's method and baselines on the same
data (benchmarks/results/host_study.json, when it holds that data set and seed on full data).
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
from tinycil import software  # noqa: E402

DEFAULT_RUNS = ["fashion-mnist:0", "fashion-mnist:1", "digits:0", "mnist5k:0", "basic-motions:0"]
# Data sets whose test set is one task's worth per class: fewer tasks (basic-motions has 4 classes).
TASKS = {"basic-motions": 2}
# --quick: at most this many training / test samples (stratified), and quick training.
QUICK_SUBSAMPLE = {"max_train": 5000, "max_test": 1000}


def private_project(tmp: Path) -> Path:
    shutil.copytree(ROOT / "firmware", tmp / "firmware",
                    ignore=shutil.ignore_patterns(".pio", "model_data.*"))
    shutil.copytree(ROOT / "boards", tmp / "boards")
    return tmp


def data_label(config: dict, quick: bool) -> str:
    """What data a run saw, for every table that shows its numbers."""
    if config.get("max_train") or config.get("max_test"):
        return (f"subsample: {config.get('train_samples')} training / "
                f"{config.get('test_samples')} test samples (--quick)")
    return (f"full data: {config.get('train_samples')} training / {config.get('test_samples')} "
            f"test samples" + (", quick training" if quick else ""))


def device_run(dataset: str, seed: int, quick: bool) -> dict:
    from tinycil.cli.run import run_end_to_end

    prepare_kwargs = {"tail_layers": "auto"}
    if quick:
        prepare_kwargs.update(QUICK_SUBSAMPLE)
    with tempfile.TemporaryDirectory(prefix="tinycil-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["TINYCIL_STATE_DIR"] = str(tmp / "state")
        project = private_project(tmp / "project")
        started = time.monotonic()
        results = run_end_to_end(dataset, "mps2_an500", tmp / "run", root=project, quick=quick,
                                 seed=seed, n_tasks=TASKS.get(dataset, 5), icount=True,
                                 progress=False, echo=print, prepare_kwargs=prepare_kwargs)
        results["wall_seconds"] = time.monotonic() - started
        config = json.loads((tmp / "run" / "config.json").read_text())
        manifest = json.loads((tmp / "run" / "export" / "manifest.json").read_text())
        results["run_config"] = {k: config.get(k) for k in (
            "tail_layers", "cut_reason", "class_order", "train_samples", "test_samples",
            "max_train", "max_test", "buffer", "training", "resize", "family")}
        results["memory"] = manifest["memory"]
        return results


def host_reference(dataset: str, seed: int) -> dict | None:
    """The host study's method and baselines for this data set and seed, on full data."""
    path = RESULTS_DIR / "host_study.json"
    if not path.is_file():
        return None
    study = json.loads(path.read_text())
    if study.get("quick"):
        return None
    for entry in (study.get("datasets", {}).get(dataset) or {}).get("per_seed", []):
        cfg = entry.get("config") or {}
        if entry.get("seed") == seed and not cfg.get("max_train") and not cfg.get("max_test"):
            out = {"method": entry["method"]["final_avg_accuracy"]}
            out.update({k: v["final_avg_accuracy"] for k, v in entry["baselines"].items()})
            return out
    return None


def wall_split(results: dict) -> dict:
    """Where a run's wall time went (seconds), and what the link carried while the device ran."""
    timing = results.get("timing") or {}
    log = results["device_log"]
    tasks = log["tasks"].values()
    train = sum(m["train_seconds"] for m in tasks)
    evals = log.get("deploy_eval_seconds", 0.0) + sum(m.get("eval_seconds", 0.0) for m in tasks)
    device = timing.get("start_device", 0.0) + timing.get("device", 0.0)
    wire = sum(m["link"]["wire_bytes"] for m in tasks)
    return {
        "prepare": timing.get("prepare"),  # host training and distillation of the known tasks
        "export_build": (timing.get("export") or 0.0) + (timing.get("build") or 0.0),
        "device_training": train,          # streaming the training samples, training on the device
        "device_evaluations": evals,       # the deployed model's and every task's evaluation
        "device_other": max(0.0, device - train - evals),  # buffer, statistics, QEMU start
        "device": device,
        "simulation": timing.get("simulation"),  # the numpy simulation of the device procedure
        "twin": timing.get("twin"),              # the firmware's runtime on the host
        "total": timing.get("total") or results.get("wall_seconds"),
        "link_bytes_to_device": wire,
        "link_kB_per_s": (wire / 1000 / (train + evals)) if train + evals else None,
        "device_train_instructions": sum(m["ticks_per_train_sample"] * m["samples"]
                                         for m in tasks if m.get("ticks_per_train_sample")),
        "device_eval_instructions": sum(m.get("eval_ticks", 0) for m in tasks),
    }


def summarise(results: dict, quick: bool) -> dict:
    tasks = results["device_log"]["tasks"]
    cfg = results["run_config"]
    return {
        "dataset": results["dataset"], "seed": results["seed"],
        "data": data_label(cfg, quick), "quick": quick,
        "trainable_layers": cfg["tail_layers"], "cut_reason": cfg["cut_reason"],
        "final_avg_accuracy": {"device": results["device"]["final_avg_accuracy"],
                               "host_simulation": results["method"]["final_avg_accuracy"],
                               "host_twin": (results.get("twin") or {}).get("final_avg_accuracy")},
        "forgetting": results["device"]["forgetting"],
        "device_equals_twin": (results.get("twin") or {}).get("accuracy_matrix")
                              == results["device"]["accuracy_matrix"],
        "fidelity": results.get("fidelity"),
        "host_study": None if quick else host_reference(results["dataset"], results["seed"]),
        "ram_used": results["memory"]["ram_used"], "ram_total": results["memory"]["ram_total"],
        "wall_seconds_per_task": {t: m["seconds"] for t, m in tasks.items()},
        "instructions_per_train_sample": {t: m["ticks_per_train_sample"] for t, m in tasks.items()},
        "wall_seconds": results["wall_seconds"],
        "wall_split": wall_split(results),
        "epochs": (cfg.get("training") or {}).get("epochs"),
        "streamed_samples": sum(m["samples"] for m in tasks.values()),
        "evaluated_samples": sum(m.get("eval_samples", 0) for m in tasks.values()),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def ordered(rows: list[dict]) -> list[dict]:
    """Rows by data set in DEFAULT_RUNS' order, then seed: a run repeated later keeps its place."""
    names = list(dict.fromkeys(spec.partition(":")[0] for spec in DEFAULT_RUNS))
    rank = {name: i for i, name in enumerate(names)}
    return sorted(rows, key=lambda r: (rank.get(r["dataset"], len(rank)), r["dataset"],
                                       int(r["seed"]), bool(r.get("quick"))))


def markdown(rows: list[dict]) -> str:
    rows = ordered(rows)
    out = ["# Device runs on the emulated board (mps2_an500, QEMU -icount)", "",
           "Every training sample of every field task streamed, the whole test set evaluated, a "
           "1% buffer of each task's training data, the trainable part chosen by the memory plan "
           "(auto cut), unless the data column says otherwise.", "",
           "| data set | seed | data | trainable layers | device | host twin | numpy ref. | "
           "device = twin | host method | naive | random replay | fixed size | joint | "
           "forgetting (device) | RAM | instr. / train sample | wall (all steps) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc, hs = r["final_avg_accuracy"], r["host_study"] or {}
        ips = list(r["instructions_per_train_sample"].values())
        out.append(
            f"| {r['dataset']} | {r['seed']} | {r['data']} | {r['trainable_layers']} | "
            f"{_pct(acc['device'])} | {_pct(acc['host_twin'])} | "
            f"{_pct(acc['host_simulation'])} | {'yes' if r['device_equals_twin'] else 'NO'} | "
            f"{_pct(hs.get('method'))} | {_pct(hs.get('naive'))} | "
            f"{_pct(hs.get('random_replay'))} | {_pct(hs.get('fixed_size'))} | "
            f"{_pct(hs.get('joint'))} | {_pct(r['forgetting'])} | "
            f"{r['ram_used'] / 1024:.0f} / {r['ram_total'] / 1024:.0f} KB | "
            f"{sum(ips) / max(1, len(ips)):,.0f} | {r['wall_seconds'] / 60:.1f} min |")
    out += ["", "Host method and baselines: benchmarks/results/host_study.json on the same data "
            "set, seed and full data (\"-\" where it has none, and for subsampled runs). The "
            "auto cut's reasons:", ""]
    out += [f"- {r['dataset']} seed {r['seed']}: {r['cut_reason']}"
            + (f" (code {r['code_version']})" if r.get("code_version") else "") for r in rows]
    out += ["", "Software: " + software.describe_rows([r.get("software") for r in rows]) + "."]
    out += ["", "## Where the wall time goes", "",
            "Minutes. The device run is everything between QEMU's start and the last task's "
            "evaluation: streaming the training samples while the device trains on them, and "
            "the evaluations (the deployed model, then the test data of every task seen after "
            "each task). The numpy simulation and the host twin are host work after the device "
            "run. Link: the bytes sent to the device (training and evaluation frames, "
            "retransmissions included) per second of training and evaluation.", "",
            "| data set | seed | samples streamed (epochs) | test samples evaluated | prepare (host "
            "training, distillation) | export + build | device: training | device: evaluations "
            "| device: other | device run | link to the device | device instructions (train / "
            "eval) | numpy simulation | host twin | total |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = r.get("wall_split")
        if not w:
            continue
        out.append(
            f"| {r['dataset']} | {r['seed']} | {r.get('streamed_samples', 0):,} "
            f"({r.get('epochs')}) | {r.get('evaluated_samples', 0):,} | {_min(w['prepare'])} | "
            f"{_min(w['export_build'])} | {_min(w['device_training'])} | "
            f"{_min(w['device_evaluations'])} | {_min(w['device_other'])} | "
            f"**{_min(w['device'])}** | "
            + ("-" if w["link_kB_per_s"] is None else
               f"{w['link_bytes_to_device'] / 1e6:.1f} MB at {w['link_kB_per_s']:.1f} kB/s")
            + f" | {w['device_train_instructions'] / 1e9:.1f} G / "
            f"{w['device_eval_instructions'] / 1e9:.1f} G | {_min(w['simulation'])} | "
            f"{_min(w['twin'])} | {_min(w['total'])} |")
    out += ["", "What bounds a device run on the emulated board: the emulated CPU (QEMU runs the "
            "float arithmetic through software helpers, on the order of 100 million instructions "
            "per second here: the instructions column) and the link, which QEMU's CMSDK UART "
            "feeds one byte per round of its main loop (a poll, a wake-up of the emulated CPU, an "
            "interrupt: tens of kB/s, less on a loaded machine). The two overlap: each new sample "
            "is trained as its frame arrives, and the device's receive ring holds the next "
            "samples while the device trains on a batch's replay draws (8 KB; with 4 KB and whole "
            "batches trained at their end, the link waited on every step). "
            "Sample frames are packed (the bytes that differ from the background, with a bitmap): "
            "a 14x14 Fashion-MNIST image with its label is about 140 bytes on the wire instead of "
            "197."]
    return "\n".join(out) + "\n"


def _min(seconds) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, metavar="DATASET:SEED")
    ap.add_argument("--quick", action="store_true",
                    help=f"subsample the data ({QUICK_SUBSAMPLE}) and train briefly; stated "
                         "with every number")
    ap.add_argument("--name", default="device_runs", help="results file name (without suffix)")
    ap.add_argument("--keep", action="store_true",
                    help="add to the results file instead of starting a new one (a run of the "
                         "same data set, seed and data replaces the earlier one)")
    ap.add_argument("--resummarise", action="store_true",
                    help="run nothing: rebuild the table from the stored runs (for a host study "
                         "that was re-run after them)")
    args = ap.parse_args()
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{args.name}.json"
    if args.resummarise:
        stored = json.loads(path.read_text())
        rows = []
        for key, res in stored["runs"].items():
            row = summarise(res, key.endswith("--quick"))
            row["code_version"] = res.get("code_version")
            row["software"] = res.get("software")
            rows.append(row)
        stored["summary"] = ordered(rows)
        path.write_text(json.dumps(stored, indent=2) + "\n")
        (RESULTS_DIR / f"{args.name}.md").write_text(markdown(rows))
        print(markdown(rows))
        return
    runs, rows = {}, []
    if args.keep and path.is_file():
        earlier = json.loads(path.read_text())
        runs = dict(earlier.get("runs") or {})
        rows = [r for r in earlier.get("summary") or [] if f"{r['dataset']}:{r['seed']}"
                + (" --quick" if r.get("quick") else "") in runs]
    code = code_version()
    versions = software.versions(programs=True)
    for spec in args.runs:
        dataset, _, seed = spec.partition(":")
        key = f"{dataset}:{int(seed or 0)}" + (" --quick" if args.quick else "")
        res = device_run(dataset, int(seed or 0), args.quick)
        res["code_version"] = code
        res["software"] = versions
        runs[key] = res
        row = summarise(res, args.quick)
        row["code_version"] = code
        row["software"] = versions
        rows = [r for r in rows if (r["dataset"], r["seed"], bool(r.get("quick")))
                != (dataset, int(seed or 0), args.quick)] + [row]
        # written after every run: a long benchmark keeps what it has measured. With --keep the
        # file is read again first, so runs measured meanwhile by another process stay in it.
        if args.keep and path.is_file():
            now = json.loads(path.read_text())
            runs = {**(now.get("runs") or {}), key: res}
            rows = [r for r in now.get("summary") or []
                    if (r["dataset"], r["seed"], bool(r.get("quick")))
                    != (dataset, int(seed or 0), args.quick)] + [row]
        quick = any(r.get("quick") for r in rows)
        path.write_text(json.dumps(
            {"quick": quick, "subsample": QUICK_SUBSAMPLE if quick else None,
             "runs": runs, "summary": ordered(rows)}, indent=2) + "\n")
        (RESULTS_DIR / f"{args.name}.md").write_text(markdown(rows))
    print(markdown(rows))


def code_version() -> str | None:
    """The commit the measured code is (TINYCIL_CODE_VERSION names it for a copy without git)."""
    import subprocess

    if os.environ.get("TINYCIL_CODE_VERSION"):
        return os.environ["TINYCIL_CODE_VERSION"]
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "tinycil", "firmware", "boards", "benchmarks/device_runs.py"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" with uncommitted changes" if dirty else "")


if __name__ == "__main__":
    main()
