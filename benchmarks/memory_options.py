"""Accuracy of the device procedure under the RAM-saving options, measured in the simulation.

Training a convolution on the device costs RAM per trainable parameter (weight, gradient sum,
momentum: 12 bytes) plus the replay area in RAM (1% of each field task's data). Two options save
most without changing the procedure's structure:

- momentum kept in bfloat16 (2 bytes instead of 4 per parameter; the update itself runs in
  float32 and only the kept value is rounded, to nearest even);
- the field tasks' replay samples kept at 4 bits per input value in RAM (int8 value v kept as
  round((v + 128) / 17), read back as 17 n - 128: both ends exact).

This script runs the device procedure (tinycil.learn.simulate, the device's arithmetic) on a
prepared run folder with each option and both, and prints / writes the accuracy table:

    .venv/bin/python benchmarks/memory_options.py RUN_DIR [--name NAME] [--variants ...]
        [--out NAME]

It writes benchmarks/results/memory_options.json and .md (or --out's name); the change column is
against the first row run. The run folder's trainable part is
whatever its prepare chose; the table says which.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tinycil import software  # noqa: E402

OUT = ROOT / "benchmarks" / "results"

VARIANTS = {
    "float32 momentum, int8 replay": (32, False),
    "bfloat16 momentum": (16, False),
    "4-bit replay in RAM": (32, True),
    "bfloat16 momentum and 4-bit replay": (16, True),
}


def four_bit(x8: np.ndarray) -> np.ndarray:
    """int8 values as a 4-bit replay area keeps them."""
    n = np.clip(np.rint((x8.astype(np.int32) + 128) / 17), 0, 15)
    return (n * 17 - 128).astype(np.int8)


def run_variant(base, momentum_bits: int, pack: bool) -> dict:
    from tinycil.learn.simulate import simulate_run

    inp = copy.copy(base)
    inp.tail = base.tail.copy()
    inp.tail.momentum_bits = momentum_bits
    if pack:  # only the field tasks' samples live in the RAM area; the known tasks' in flash
        inp.buffers = [b if t < base.known else (four_bit(b[0]), base.latents(four_bit(b[0])), b[2])
                       for t, b in enumerate(base.buffers)]
    started = time.perf_counter()
    result = simulate_run(base.run.path, inputs=inp)
    result["seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--name", default=None, help="label of the run in the table")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="the rows to run (default: all)")
    ap.add_argument("--out", default="memory_options",
                    help="name of the result files in benchmarks/results/")
    args = ap.parse_args()
    from tinycil.learn.simulate import RunInputs

    base = RunInputs(args.run_dir)
    cfg = base.config
    label = args.name or (f"{cfg['dataset']} seed {cfg['seed']}, trainable layers "
                          f"{cfg['tail_layers']}, training samples "
                          f"{'all' if not cfg.get('max_train') else cfg['max_train']}")
    rows = {}
    for name in args.variants:
        bits, pack = VARIANTS[name]
        r = run_variant(base, bits, pack)
        rows[name] = {"final_avg_accuracy": r["final_avg_accuracy"], "forgetting": r["forgetting"],
                      "accuracy_matrix": r["accuracy_matrix"], "seconds": r["seconds"]}
        print(f"{name}: final average {r['final_avg_accuracy']:.4f}, forgetting "
              f"{r['forgetting']:.4f} ({r['seconds']:.0f} s)")
    OUT.mkdir(parents=True, exist_ok=True)
    versions = software.versions()
    (OUT / f"{args.out}.json").write_text(json.dumps({"run": label, "rows": rows,
                                                      "software": versions}, indent=2) + "\n")
    first = next(iter(rows.values()))
    ref = first["final_avg_accuracy"]
    lines = ["# RAM-saving options: accuracy in the simulation", "",
             f"Run: {label}. The device procedure simulated with the device's arithmetic "
             "(tinycil.learn.simulate); each option changes only what its row says.", "",
             "| option | final average accuracy | change | forgetting | seconds |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['final_avg_accuracy']:.2f}% | "
                     f"{100 * (r['final_avg_accuracy'] - ref):+.2f} | {100 * r['forgetting']:.2f}% | "
                     f"{r['seconds']:.0f} |")
    variants = " ".join(f'"{v}"' for v in args.variants)
    lines += ["", f"Regenerate: `tinycil prepare --dataset {cfg['dataset']} --trainable "
              f"{cfg['tail_layers']} -o RUN_DIR` (full data), then `.venv/bin/python "
              f"benchmarks/memory_options.py RUN_DIR --variants {variants} --out {args.out}`.", "",
              f"Software: {software.describe(versions)}.", ""]
    (OUT / f"{args.out}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
