"""Cost and value of distilling one Split-Fashion-MNIST task into a 1% replay set.

Distils the task (classes 0 and 1 by default: 12000 training samples -> 120 synthetic) with
distribution matching at its default iterations and with gradient matching at a reduced count,
then trains the same tiny classifier on each distilled set and on a random 1% subset of the same
size and class balance, and reports test accuracy on the task's classes (mean and spread over
classifier seeds). Writes benchmarks/results/distill_cost.json and .md.

    python benchmarks/distill_cost.py [--classes 0,1] [--dm-iterations N] [--gm-iterations N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from tinycil import software

RESULTS = Path(__file__).resolve().parent / "results"
CLASSIFIER_SEEDS = (0, 1, 2)
CLASSIFIER_EPOCHS = 150


def classifier_accuracy(x_train, y_train, x_test, y_test, classes, seed):
    """A tiny CNN trained only on the given (small) set; accuracy on the task's test data."""
    import keras

    keras.utils.set_random_seed(seed)
    to_local = {c: i for i, c in enumerate(classes)}
    local_train = np.array([to_local[int(c)] for c in y_train])
    local_test = np.array([to_local[int(c)] for c in y_test])
    model = keras.Sequential(
        [
            keras.Input(x_train.shape[1:]),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(len(classes)),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.003),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, local_train, epochs=CLASSIFIER_EPOCHS, batch_size=32, verbose=0)
    return float(model.evaluate(x_test, local_test, verbose=0)[1])


def accuracies(x_train, y_train, x_test, y_test, classes):
    accs = [
        classifier_accuracy(x_train, y_train, x_test, y_test, classes, s) for s in CLASSIFIER_SEEDS
    ]
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "runs": accs}


def main():
    import tensorflow as tf

    from tinycil.datasets import load_dataset
    from tinycil.learn.distill import DEFAULT_ITERATIONS, distill_task, matching_loss, random_subset
    from tinycil.learn.tasks import task_subset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="0,1")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--dm-iterations", type=int, default=DEFAULT_ITERATIONS["dm"])
    parser.add_argument("--gm-iterations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    classes = [int(c) for c in args.classes.split(",")]

    ds = load_dataset("fashion-mnist", seed=args.seed)
    x, y = task_subset(ds.x_train, ds.y_train, classes)
    x_test, y_test = task_subset(ds.x_test, ds.y_test, classes)
    print(f"task {classes}: {len(x)} training samples, {len(x_test)} test samples")

    runs = {}
    sets = {}
    for method, iterations in (("dm", args.dm_iterations), ("gm", args.gm_iterations)):
        d = distill_task(
            x, y, fraction=args.fraction, method=method, iterations=iterations, seed=args.seed
        )
        sets[method] = d
        runs[method] = {
            "iterations": d.meta["iterations"],
            "seconds": round(d.meta["seconds"], 2),
            "seconds_per_iteration": round(d.meta["seconds"] / max(1, d.meta["iterations"]), 4),
            "samples": len(d),
            "mean_abs_change": round(d.meta["mean_abs_change"], 4),
        }
        if method == "gm":
            runs[method]["inner_steps"] = d.meta["inner_steps"]
            runs[method]["seconds_per_matching_update"] = round(
                d.meta["seconds"] / max(1, d.meta["iterations"] * d.meta["inner_steps"]), 4
            )
        print(f"{method}: {runs[method]}")

    n = len(sets["dm"])
    x_rand, y_rand = random_subset(x, y, n, seed=args.seed)
    match = {
        "random": matching_loss(x, y, x_rand, y_rand, seed=999),
        "dm": matching_loss(x, y, sets["dm"].x, sets["dm"].y, seed=999),
        "gm": matching_loss(x, y, sets["gm"].x, sets["gm"].y, seed=999),
    }
    acc = {
        "random": accuracies(x_rand, y_rand, x_test, y_test, classes),
        "dm": accuracies(sets["dm"].x, sets["dm"].y, x_test, y_test, classes),
        "gm": accuracies(sets["gm"].x, sets["gm"].y, x_test, y_test, classes),
    }

    result = {
        "dataset": "fashion-mnist",
        "classes": classes,
        "train_samples": int(len(x)),
        "test_samples": int(len(x_test)),
        "fraction": args.fraction,
        "synthetic_samples": n,
        "seed": args.seed,
        "distillation": runs,
        "matching_loss_held_out_nets": {k: round(v, 5) for k, v in match.items()},
        "classifier": {
            "arch": "conv8-pool-conv16-pool-dense, Adam 0.003, "
            f"{CLASSIFIER_EPOCHS} epochs, batch 32",
            "seeds": list(CLASSIFIER_SEEDS),
        },
        "test_accuracy": acc,
        "machine": {"cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        # Python's and TensorFlow's versions among the others (tinycil.software)
        "software": software.versions(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distill_cost.json").write_text(json.dumps(result, indent=2) + "\n")

    def pct(a):
        return f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}"

    lines = [
        "# Distillation cost: one Split-Fashion-MNIST task",
        "",
        f"Task classes {classes}: {len(x)} training samples -> {n} synthetic "
        f"({args.fraction:.0%}), seed {args.seed}, {os.cpu_count()} CPU cores, "
        f"{software.describe(result['software'])}. Times include one-time graph tracing.",
        "",
        "| method | iterations | total s | s / iteration | mean abs change of samples |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, r in runs.items():
        its = str(r["iterations"])
        if method == "gm":
            its += f" x {r['inner_steps']} updates"
        lines.append(
            f"| {method} | {its} | {r['seconds']:.1f} | {r['seconds_per_iteration']:.3f} | "
            f"{r['mean_abs_change']:.3f} |"
        )
    lines += [
        "",
        f"Test accuracy on the task's {len(x_test)} test samples of a tiny CNN trained only on "
        f"the {n}-sample set (mean ± std over {len(CLASSIFIER_SEEDS)} classifier seeds), and the "
        "distribution-matching objective measured on random networks the distillation never saw:",
        "",
        "| training set | test accuracy % | matching loss |",
        "| --- | --- | --- |",
        f"| random 1% subset | {pct(acc['random'])} | {match['random']:.4f} |",
        f"| distilled, DM | {pct(acc['dm'])} | {match['dm']:.4f} |",
        f"| distilled, GM | {pct(acc['gm'])} | {match['gm']:.4f} |",
        "",
    ]
    (RESULTS / "distill_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
