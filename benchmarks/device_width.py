"""How wide the device's model is, and how many of its layers train: accuracy of the device
procedure for each choice, on full data, in the simulation (tinycil.learn.simulate, the device's
arithmetic step for step; the emulated device equals it, see device_runs.md).

    python benchmarks/device_width.py [--dataset fashion-mnist] [--seeds 0 1] [--choices ...]

Choices (each a `tinycil prepare` of the whole data set for mps2_an500, then the simulation):
  known    --frozen-width known: the frozen prefix at the first task's narrow widths, the most
           trainable layers that fit (the cut of the previous releases);
  auto     the default: the prefix at its final width, the most trainable layers that fit with
           the whole model at its widest scale that fits;
  dense2   --trainable 2 with the auto width: only the two dense layers train.

Writes benchmarks/results/device_width.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
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

CHOICES = {
    "known": {"frozen_width": "known", "tail_layers": "auto"},
    "auto": {"frozen_width": "auto", "tail_layers": "auto"},
    "dense2": {"frozen_width": "auto", "tail_layers": 2},
}
BOARD = "mps2_an500"


def one(dataset: str, seed: int, choice: str, tmp: Path) -> dict:
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.cut import cut_chooser, sized_cut_chooser
    from tinycil.learn.prepare import prepare_run
    from tinycil.learn.simulate import simulate_run
    from tinycil.runfolder import RunFolder

    board = load_board(BOARD)
    run_dir = tmp / f"{dataset}-{seed}-{choice}"
    started = time.perf_counter()
    config = prepare_run(dataset, run_dir, seed=seed, board=BOARD, progress=False,
                         echo=lambda *a: None, choose_cut=cut_chooser(board),
                         choose_sized_cut=sized_cut_chooser(board), **CHOICES[choice])
    prepared = time.perf_counter() - started
    result = simulate_run(run_dir)
    plan = RunFolder(run_dir).read_plan()
    return {"dataset": dataset, "seed": seed, "choice": choice, "software": software.versions(),
            "tail_layers": config["tail_layers"], "cut_reason": config["cut_reason"],
            "width_scale": config["frozen_prefix"]["width_scale"],
            "replay_shift": int(config["training"].get("replay_shift", 0)),
            "head_weight": float(config["training"].get("discriminant_weight", 0.0)),
            "widths_first": plan[0]["widths"], "widths_last": plan[-1]["widths"],
            "final_avg_accuracy": result["final_avg_accuracy"],
            "forgetting": result["forgetting"], "train_flops": result["train_flops"],
            "train_samples": config["train_samples"], "test_samples": config["test_samples"],
            "prepare_seconds": prepared,
            "simulate_seconds": time.perf_counter() - started - prepared}


def render(rows: list[dict]) -> str:
    out = ["# The device's model: width and trainable layers", "",
           "Device procedure simulated with the device's arithmetic (tinycil.learn.simulate) on "
           "full data, for the 320 KB board (mps2_an500 = STM32F746 budget), 1% buffer, default "
           "training. `known`: frozen prefix at the first task's widths; `auto` (default): prefix "
           "at its final width, most trainable layers at the widest model that fits; `dense2`: "
           "two dense layers train, auto width. Replay shift: the training's replay_shift (rows "
           "with 0 were simulated before the option existed). Head: the discriminant head's "
           "weight (`--head-weight`; rows with 0 were simulated before the head existed).", "",
           "| data set | seed | choice | trainable layers | widths after task 0 -> last | "
           "replay shift | head | final average | forgetting | device FLOPs |",
           "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['dataset']} | {r['seed']} | {r['choice']} | {r['tail_layers']} | "
                   f"{r['widths_first']} -> {r['widths_last']} | {r.get('replay_shift', 0)} | "
                   f"{r.get('head_weight', 0.0):g} | "
                   f"{100 * r['final_avg_accuracy']:.1f}% | {100 * r['forgetting']:.1f}% | "
                   f"{r['train_flops']:.3g} |")
    by = {}
    for r in rows:
        by.setdefault((r["dataset"], r["choice"], r.get("replay_shift", 0), r.get("head_weight", 0.0)),
                      []).append(r["final_avg_accuracy"])
    out += ["", "Mean over the seeds run:", "",
            "| data set | choice | replay shift | head | seeds | final average |",
            "| --- | --- | ---: | ---: | ---: | ---: |"]
    for (ds, choice, shift, head), accs in by.items():
        out.append(f"| {ds} | {choice} | {shift} | {head:g} | {len(accs)} | "
                   f"{100 * sum(accs) / len(accs):.1f}% |")
    seeds: dict[str, list[int]] = {}
    for r in rows:
        if r["seed"] not in seeds.setdefault(r["dataset"], []):
            seeds[r["dataset"]].append(r["seed"])
    commands = "; ".join(f"`.venv/bin/python benchmarks/device_width.py --dataset {ds} --seeds "
                         f"{' '.join(map(str, s))}`" for ds, s in seeds.items())
    out += ["", f"Software: {software.describe_rows([r.get('software') for r in rows])}.",
            "", f"Regenerate: {commands} (about 10 minutes per fashion-mnist row on 2 cores).", ""]
    return "\n".join(out)


def _key(row: dict) -> tuple:
    return row["dataset"], row["seed"], row["choice"], row.get("head_weight", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist",
                    choices=["fashion-mnist", "mnist5k", "digits", "basic-motions"], help="an offline data set")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--choices", nargs="+", choices=list(CHOICES), default=["known", "auto"])
    args = ap.parse_args()
    if bad := [s for s in args.seeds if s < 0]:
        ap.error(f"seeds must be 0 or more, got {', '.join(map(str, bad))}")
    path = RESULTS_DIR / "device_width.json"
    stored = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    # A row is kept per data set, seed, choice and head weight: rows simulated before the head
    # existed (weight 0) stay beside the ones with it.
    rows = {_key(r): r for r in stored["rows"]}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for choice in args.choices:
                r = one(args.dataset, seed, choice, Path(tmp))
                rows[_key(r)] = r
                print(f"{r['dataset']} seed {seed} {choice}: {r['tail_layers']} layers, widths "
                      f"{r['widths_last']}, {100 * r['final_avg_accuracy']:.1f}%", flush=True)
                ordered = sorted(rows.values(), key=lambda r: (r["dataset"], r["seed"],
                                                               list(CHOICES).index(r["choice"]),
                                                               r.get("head_weight", 0.0)))
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"rows": ordered}, indent=2) + "\n")
                (RESULTS_DIR / "device_width.md").write_text(render(ordered))


if __name__ == "__main__":
    main()
