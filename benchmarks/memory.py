"""RAM and flash of each demo model against the STM32F746's 320 KB / 1 MB budget.

For every demo model: prepare a quick run with the default cut (`--trainable auto`: the memory
plan's choice for the board, its reason recorded) on the data set's full training data (the RAM
replay area holds 1% of every field task's data, so a subsample would understate it), export it
(memory plan), then build the firmware with that export for the board and read the linker's
figures (the final judge). Quick: few epochs and distillation iterations, which change no size.
Writes benchmarks/results/memory.json and memory.md.

    python benchmarks/memory.py [--board nucleo_f746zg]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tinycil import software

ROOT = Path(__file__).resolve().parent.parent
DEMOS = [  # name, dataset, family, prepare options
    ("digits mlp", "digits", "mlp", {}),
    ("fashion-mnist 14x14 cnn2d", "fashion-mnist", "cnn2d", {"max_test": 500}),
    ("basic-motions cnn1d", "basic-motions", "cnn1d", {"n_tasks": 2, "batch_new": 8, "batch_replay": 8}),
]


def private_project(dest: Path) -> Path:
    """A copy of the firmware project and boards, so that exporting and building here leave the
    checkout's firmware/generated/ and .pio/ alone."""
    shutil.copytree(ROOT / "firmware", dest / "firmware",
                    ignore=shutil.ignore_patterns(".pio", "model_data.*"))
    shutil.copytree(ROOT / "boards", dest / "boards")
    return dest


def link_figures(board: str, project: Path) -> dict:
    """Build the product firmware with the export in the project copy and read the linker's
    usage (tinycil.deploy.build, as `tinycil flash` builds it)."""
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.build import BuildError, build

    try:
        built = build(load_board(board, project), root=project)
    except BuildError as exc:
        return {"build_ok": False, "build_error": str(exc)[-800:], "flash_linked": None,
                "ram_linked": None}
    return {"build_ok": True, "flash_linked": built.flash_used, "ram_linked": built.ram_used}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="nucleo_f746zg")
    args = ap.parse_args()
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.cut import cut_chooser, sized_cut_chooser
    from tinycil.deploy.export import ExportError, export_run
    from tinycil.deploy.memplan import MemoryPlanError
    from tinycil.learn.prepare import prepare_run

    board = load_board(args.board)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = private_project(Path(tmp) / "project")
        for name, dataset, family, opts in DEMOS:
            run = Path(tmp) / dataset
            row = {"model": name, "dataset": dataset, "family": family, "board": args.board}
            cfg = prepare_run(dataset, run, family=family, quick=True, progress=False,
                              tail_layers="auto", board=args.board,
                              choose_cut=cut_chooser(board), choose_sized_cut=sized_cut_chooser(board),
                              **opts)
            row.update(trainable_layers=cfg["tail_layers"], cut=cfg.get("cut_reason"))
            try:
                res = export_run(run, args.board, root=project)
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
            row.update(link_figures(args.board, project))
            rows.append(row)
            print(f"{name}: RAM planned {row['ram_planned']} linked {row.get('ram_linked')}, "
                  f"flash planned {row['flash_planned']} linked {row.get('flash_linked')}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    versions = software.versions(programs=True)
    (out / "memory.json").write_text(json.dumps({"board": args.board, "models": rows,
                                                 "software": versions}, indent=2) + "\n")
    lines = [f"# RAM and flash of the demo models ({args.board}: 320 KB RAM, 1 MB flash)", "",
             "Planned: tinycil.deploy.memplan before the build (arena for the final grown tail, replay RAM "
             "area, protocol buffers, stack). Linked: the linker's figures for the firmware built "
             "with the export (runtime linked in).", "",
             "| model | trainable layers | RAM planned | RAM linked | flash planned | flash linked | arena | buffer (flash + RAM slots) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('trainable_layers')} | not exported: "
                         f"{r['error'][:120]} | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['trainable_layers']} | {r['ram_planned']} | "
                     f"{r.get('ram_linked')} | {r['flash_planned']} | "
                     f"{r.get('flash_linked')} | {r['arena_bytes']} | {r['buffer']['flash_samples']} + "
                     f"{r['buffer']['ram_capacity']} |")
    lines += ["", "The memory plan's choice of the trainable part, per model:", ""]
    lines += [f"- {r['model']}: {r.get('cut')}" for r in rows]
    lines += ["", "Training memory per trainable parameter: 12 bytes (the weight, its gradient "
              "summed over the mini-batch, its momentum); each layer's backward pass adds one "
              "sample's gradient straight into the sums, so no sample gradient is buffered; the "
              "backward pass's two ping-pong buffers are each sized for their own layers' maps. "
              "Regenerate: `.venv/bin/python benchmarks/memory.py`.", "",
              f"Software: {software.describe(versions)}."]
    (out / "memory.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
