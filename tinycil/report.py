"""Summaries of a finished run: the printed table, summary.md and plot.png (from results.json)."""

from __future__ import annotations

from tinycil.learn.metrics import avg_accuracy_after_each_task
from tinycil.runfolder import RunFolder

LABELS = {
    "method": "method (adaptive + distilled replay)",
    "naive": "naive fine-tuning",
    "random_replay": "random replay (same buffer size)",
    "fixed_size": "fixed final size + distilled replay",
    "joint": "joint training (upper bound)",
    "device": "device",
}
COLUMNS = ("run", "final avg acc", "BWT", "forgetting", "train FLOPs", "FLOPs / fixed", "buffer bytes",
           "buffer %")


class ReportError(ValueError):
    """results.json does not follow the results format."""


def device_notes(results: dict) -> list[str]:
    """What a reader must know about the device RESULT: which rows are not the device's, and
    which earlier device sessions are kept aside (never mixed into it)."""
    notes = []
    dev = results.get("device")
    if isinstance(dev, dict):
        session = dev.get("session") or {}
        sid = session.get("session_id")
        done = dev.get("tasks_completed")
        if isinstance(sid, int):
            notes.append(f"device: one learning session (model {session.get('signature')}, device "
                         f"session 0x{sid:08x})"
                         + (f"; tasks completed on the device: {', '.join(map(str, done))}"
                            if done else ""))
        host_rows = dev.get("rows_from_host") or []
        if host_rows:
            many = len(host_rows) > 1
            notes.append(f"device row{'s' if many else ''} {', '.join(map(str, host_rows))} of the "
                         f"accuracy matrix {'are' if many else 'is'} the host reference's: the device "
                         f"did not measure {'them' if many else 'it'} in this session")
    history = results.get("device_history") or []
    if history:
        notes.append(f"{len(history)} earlier device session(s) are kept in results.json "
                     "(\"device_history\") and not shown")
    return notes


def named_results(results: dict) -> list[tuple[str, dict]]:
    """(name, RESULT) for every run in the results, method first."""
    out = []
    if results.get("method"):
        out.append(("method", results["method"]))
    out += list((results.get("baselines") or {}).items())
    if results.get("device"):
        out.append(("device", results["device"]))
    return out


def display_name(name: str, results: dict) -> str:
    """What a run is called in tables and plots. In a device run, "method" holds the host's
    simulation of the device procedure: call it the host reference there."""
    if name == "method" and results.get("device"):
        return "host reference (simulation)"
    if name == "device" and (results.get("device") or {}).get("rows_from_host"):
        return "device (some rows: host)"
    return LABELS.get(name, name)


def table_rows(results: dict) -> list[list[str]]:
    runs = named_results(results)
    fixed = dict(runs).get("fixed_size")
    fixed_flops = fixed["train_flops"] if fixed and fixed.get("train_flops") else None
    rows = []
    for name, r in runs:
        flops = r.get("train_flops")
        rows.append([
            display_name(name, results),
            f"{100 * r['final_avg_accuracy']:.1f}%",
            f"{100 * r['bwt']:+.1f}",
            f"{100 * r['forgetting']:.1f}",
            _si(flops) if flops is not None else "-",
            f"{flops / fixed_flops:.0%}" if flops is not None and fixed_flops else "-",
            f"{r['buffer']['bytes']:,}",
            f"{100 * r['buffer']['fraction']:.2f}%",
        ])
    return rows


def format_table(results: dict) -> str:
    """A fixed-width text table for the terminal, then the notes on the device record."""
    rows = [list(COLUMNS)] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"note: {n}" for n in device_notes(results)]
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    rows = table_rows(results)
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def summary_markdown(results: dict) -> str:
    cfg = results.get("config", {})
    tasks = results.get("tasks", [])
    lines = [f"# {results.get('dataset', '?')}: class-incremental study", ""]
    facts = [f"tasks: {len(tasks)} ({', '.join('/'.join(map(str, t)) for t in tasks)})",
             f"known tasks: {results.get('known_tasks')}", f"seed: {results.get('seed')}"]
    if cfg:
        facts += [f"model family: {cfg.get('family')}", f"input shape: {cfg.get('input_shape')}",
                  f"buffer: {100 * cfg.get('buffer_fraction', 0):g}% of each task's training data",
                  f"distillation: {cfg.get('distill', {}).get('method')}, "
                  f"{cfg.get('distill', {}).get('iterations')} iterations",
                  f"training: {_kv(cfg.get('training', {}))}"]
        pol = cfg.get("width_policy")
        if pol:
            facts.append(f"width policy: {_kv(pol)}")
    if results.get("board"):
        facts.append(f"board: {results['board']}")
    lines += [f"- {f}" for f in facts] + ["", markdown_table(results), ""]
    lines += [f"Note: {n}." for n in device_notes(results)] + ([""] if device_notes(results) else [])
    lines += [
        "Final avg acc: mean accuracy over all tasks after the last one. BWT: mean change of a task's "
        "accuracy from right after learning it to the end. Forgetting: mean drop from a task's best "
        "accuracy to its final one. Train FLOPs: forward + backward FLOPs of every training sample "
        "processed (new and replay), at the model's width while it learned each task. Buffer bytes: "
        "int8 inputs (with `--replay-store latents`: the backbone's int8 latents) + a one-byte label "
        "per replay sample.", ""]
    details = results.get("details", {})
    runs = details.get("runs", {})
    if runs:
        lines += ["## Average accuracy after each task", "",
                  "| run | " + " | ".join(f"after task {i}" for i in range(len(tasks))) + " |",
                  "|---|" + "---:|" * len(tasks)]
        for name, r in named_results(results):
            curve = avg_accuracy_after_each_task(r["accuracy_matrix"])
            lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(f"{100 * a:.1f}%" for a in curve) + " |")
        lines.append("")
        if "method" in runs:
            lines += ["## Model widths per task (method)", ""]
            for i, w in enumerate(runs["method"]["widths"]):
                lines.append(f"- task {i}: widths {w}, {runs['method']['outputs'][i]} outputs")
            lines.append("")
    if details.get("distill_seconds_per_task"):
        secs = details["distill_seconds_per_task"]
        lines += [f"Distillation took {sum(secs):.1f} s in total "
                  f"({', '.join(f'{s:.1f}' for s in secs)} s per task).", ""]
    return "\n".join(lines)


def plot(results: dict, path) -> None:
    """Accuracy matrices as heat maps (one per run) and the average accuracy after each task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = named_results(results)
    n = len(runs)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.4), squeeze=False, layout="constrained")
    axes = axes[0]
    for ax, (name, r) in zip(axes, runs):
        R = np.array([[np.nan if a is None else a for a in row] for row in r["accuracy_matrix"]], float)
        im = ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(display_name(name, results), fontsize=9)
        ax.set_xlabel("evaluated task j", fontsize=8)
        ax.set_ylabel("after task i", fontsize=8)
        ax.set_xticks(range(len(R)))
        ax.set_yticks(range(len(R)))
        for i in range(len(R)):
            for j in range(i + 1):
                ax.text(j, i, f"{100 * R[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if R[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=axes[n - 1], fraction=0.05, label="accuracy")
    ax = axes[n]
    for k, (name, r) in enumerate(runs):
        curve = avg_accuracy_after_each_task(r["accuracy_matrix"])
        # The device's curve often lies exactly on its host reference: dash it so both show.
        style = {"linestyle": "--", "marker": "x"} if name == "device" else {"marker": "o"}
        ax.plot(range(len(curve)), curve, label=display_name(name, results), **style)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("after task", fontsize=8)
    ax.set_ylabel("average accuracy (tasks so far)", fontsize=8)
    ax.set_title(f"{results.get('dataset', '')}", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(run: RunFolder, results: dict | None = None) -> str:
    """Write summary.md and plot.png for ``run`` (reading results.json if not given); return the table."""
    if results is None:
        results = run.read_results()
    try:
        if not isinstance(results, dict) or not named_results(results):
            raise ValueError("it holds no RESULT (\"method\", \"baselines\" or \"device\")")
        from tinycil.learn.metrics import check_matrix

        for _, r in named_results(results):
            check_matrix(r["accuracy_matrix"])
        table = format_table(results)
        summary = summary_markdown(results)
        plot(results, run.plot_path)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ReportError(f"{run.results_path} does not follow the results format ({exc}): "
                          "re-create the run (`tinycil experiment` or `tinycil prepare`/`run`)") \
            from None
    run.summary_path.write_text(summary)
    return table


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def _kv(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())
