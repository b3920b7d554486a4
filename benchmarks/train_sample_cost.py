"""Instructions per training sample of the demo models on the emulated Cortex-M7.

For each demo model: a quick `tinycil prepare`, the export into a private copy of the firmware
project, then two measurements under QEMU `-icount shift=0` (the board's counter counts executed
instructions):

- device: the product firmware built with the export (tinycil.deploy.build), started by
  tinycil.deploy.emulator; one field task is streamed over the serial protocol (tinycil.link.stream) and the
  device's STATS give instructions per streamed training sample, as a device run reports them
  (they include the serial handler's work and the receive interrupts that arrive meanwhile);
- device, latent replay: the same task streamed again to firmware built with the same run
  exported with `--replay-store latents` (the buffer keeps backbone outputs, so replayed samples
  skip the backbone; the training is the same);
- calls: a small image (train_sample_cost.cpp) linked with the same runtime, kernels and
  export times the runtime's own calls: the backbone forward, one prediction, and the calls that
  form and step one mini-batch. This splits a training step into backbone forward and tail
  forward + backward + SGD update.

MACs per training sample come from tinycil.learn.models.count_cost of the model at the size the
device trains the task at (as tinycil.learn.prepare's device_flops_per_sample counts FLOPs): backbone
forward, tail forward, tail backward (weight gradients, and input gradients of every tail layer
but the first: nothing below the tail trains).

A "training sample" here is one sample of a mini-batch: the device steps on batch_new streamed
samples plus batch_replay buffer samples, so a streamed sample costs (1 + batch_replay /
batch_new) training samples.

benchmarks/kernels.py calls measure() and merges the result into kernels.json. Alone:

    .venv/bin/python benchmarks/train_sample_cost.py [--models digits basic-motions]
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
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BOARD = "mps2_an500"
IMAGE_SOURCE = HERE / "train_sample_cost.cpp"
# The demo models (those of benchmarks/memory.py, with the digits model the demo runs: cnn2d).
# Quick prepares: the per-sample cost depends on the model's shape, not on how well it learned.
DEMOS = {
    "digits": {"dataset": "digits", "family": "cnn2d", "label": "digits 8x8 cnn2d",
               "prepare": {}},
    "fashion-mnist-14x14": {"dataset": "fashion-mnist", "family": "cnn2d",
                            "label": "fashion-mnist 14x14 cnn2d",
                            "prepare": {"resize": (14, 14), "max_train": 1500, "max_test": 300}},
    "basic-motions": {"dataset": "basic-motions", "family": "cnn1d",
                      "label": "basic-motions cnn1d",
                      "prepare": {"n_tasks": 2, "batch_new": 8, "batch_replay": 8}},
}


# tc_op_kind of firmware/lib/runtime/tc_model.h
OP_NAMES = {1: "conv2d", 2: "depthwise_conv2d", 3: "dense", 4: "max_pool", 5: "avg_pool",
            6: "mean", 7: "reshape"}


class CostError(RuntimeError):
    pass


def private_project(dest: Path) -> Path:
    """A copy of the firmware project, so that exporting and building here leave the checkout's
    firmware/generated/ and .pio/ alone."""
    shutil.copytree(ROOT / "firmware", dest / "firmware",
                    ignore=shutil.ignore_patterns(".pio", "model_data.*"))
    shutil.copytree(ROOT / "boards", dest / "boards")
    return dest


# ---- MACs ------------------------------------------------------------------------------------

def macs_per_sample(run_dir: Path) -> dict:
    """Multiply-accumulates of one training sample at the size of the first device task."""
    from tinycil.learn.models import build_model, count_cost, weight_layers
    from tinycil.runfolder import RunFolder

    run = RunFolder(run_dir)
    cfg, plan = run.read_config(), run.read_plan()
    entry = plan[int(cfg["known_tasks"])]
    model = build_model(cfg["family"], cfg["input_shape"], entry["outputs"], entry["widths"])
    cost = count_cost(model)
    first_tail = weight_layers(model)[-int(cfg["tail_layers"])].name
    cut = [l["name"] for l in cost["layers"]].index(first_tail)
    backbone = sum(l["macs"] for l in cost["layers"][:cut])
    tail = [l["macs"] for l in cost["layers"][cut:]]
    tail_fwd = sum(tail)
    # weight gradients of every tail layer, input gradients of all but the first
    tail_bwd = sum(tail) + sum(tail[1:])
    return {"backbone_fwd": backbone, "tail_fwd": tail_fwd, "tail_bwd": tail_bwd,
            "total": backbone + tail_fwd + tail_bwd,
            "flops": entry.get("device_flops_per_sample"), "widths": entry["widths"],
            "classes": entry["outputs"]}


# ---- the runtime's calls, timed in a small image ---------------------------------------------

def buffer_defines(run_dir: Path) -> list[str]:
    """The timing image's own buffers, sized for this export (at least one element each)."""
    from tinycil.deploy.export import load_export_model

    fp = load_export_model(run_dir).footprint()
    return [f"-DTC_COST_LATENT_BYTES={max(1, fp.latent_size)}",
            f"-DTC_COST_SCRATCH_BYTES={max(1, fp.scratch_bytes)}",
            f"-DTC_COST_KERNEL_SCRATCH_WORDS={max(1, (fp.kernel_scratch_bytes + 3) // 4)}"]


def build_cost_image(project: Path, out_dir: Path, defines=()) -> Path:
    """The timing image, compiled like the on-target kernel images (tests/kernels_host/target.py:
    the product's code generation flags, board support and linker script) with the runtime and
    the export of `project`."""
    from kernels_host.target import ARM_FLAGS, BOARD_DEFINES, BSP_DIR, BSP_SOURCES, LDSCRIPTS, \
        PROTOCOL_DIR, TARGET_DIR
    from kernels_host.host_lib import KERNELS_DIR

    runtime = ROOT / "firmware" / "lib" / "runtime"
    generated = project / "firmware" / "generated"
    # The export is data written by another program: its warnings are not this image's to fail on.
    flags = [f for f in ARM_FLAGS if f != "-Werror"]
    elf = out_dir / "train_sample_cost.elf"
    sources = [IMAGE_SOURCE, *BSP_SOURCES, *sorted(runtime.glob("*.cpp")),
               *sorted(KERNELS_DIR.glob("*.cpp"))]
    cmd = ["arm-none-eabi-g++", *flags, *BOARD_DEFINES, *defines,
           *(f"-I{d}" for d in [generated, runtime, KERNELS_DIR, TARGET_DIR, BSP_DIR, PROTOCOL_DIR]),
           "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
           f"-L{LDSCRIPTS}", "-T", str(LDSCRIPTS / f"{BOARD}.ld"), "-Wl,--gc-sections",
           "-o", str(elf), *map(str, sources), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise CostError(f"the timing image did not build:\n{proc.stderr[-2000:]}")
    return elf


def time_calls(project: Path, out_dir: Path, defines=()) -> dict:
    from kernels_host.target import run_image

    elf = build_cost_image(project, out_dir, defines)
    status, out = run_image(elf, timeout=300, icount=True)
    if status != 0:
        raise CostError(f"the timing image exited with status {status} (see "
                        f"{IMAGE_SOURCE.name} for its codes):\n{out[-1000:]}")
    got = {k: int(v) for k, v in re.findall(r"COST (\S+) (\d+)", out)}
    got["layers"] = [
        {"index": int(i), "op": OP_NAMES.get(int(op), op), "macs": int(macs),
         "instructions": int(instr), "output": [int(h), int(w), int(c)]}
        for i, op, macs, instr, h, w, c in re.findall(
            r"LAYER (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)]
    need = {"backbone_fwd", "predict", "batch_new", "batch_replay", "batch", "step"}
    if not need <= set(got):
        raise CostError(f"the timing image's output is incomplete:\n{out[-1000:]}")
    return got


# ---- the product firmware, one streamed task -------------------------------------------------

def stream_one_task(project: Path, run_dir: Path, echo) -> dict:
    from tinycil.deploy import emulator
    from tinycil.deploy.boards import load_board
    from tinycil.link.bridge import DeviceLink
    from tinycil.deploy.build import build
    from tinycil.link.session import Session, parse_stats
    from tinycil.link.stream import RunData, stream_task

    board = load_board(BOARD, project)
    built = build(board, root=project)
    data = RunData.load(run_dir)
    task = data.known
    state = emulator.start(board, built.elf, icount=True, record=False)
    try:
        with DeviceLink(state.url, baudrate=board.baudrate or 115200, timeout=1.0,
                        retries=10) as link:
            # One epoch of one task is plenty for a per-sample figure.
            measured = stream_task(run_dir, link, task, epochs=1, progress=False, echo=echo,
                                   board_hint=f"--board {BOARD}", data=data)
            stats = parse_stats(Session(link).call("STATS"))
    finally:
        emulator.stop_state(state)
    return {"task": task, "samples": measured["samples"], "steps": measured["steps"],
            "instructions_per_streamed_sample": measured["ticks_per_train_sample"],
            "instructions_per_step_sample": measured["ticks_per_step_sample"],
            "last_step_instructions": stats["last_step_ticks"],
            "eval_samples": stats["eval_samples"],
            "instructions_per_eval_sample": (stats["eval_ticks"] / stats["eval_samples"]
                                             if stats["eval_samples"] else None),
            "counter": stats["counter_kind_name"].lower(), "row": measured["row"],
            "flash_used": built.flash_used, "ram_used": built.ram_used}


# ---- one model -------------------------------------------------------------------------------

def split(calls: dict, macs: dict) -> dict:
    """Per training sample (one sample of a mini-batch) from the timed calls."""
    bn, br = calls["batch_new"], calls["batch_replay"]
    batch, step = calls["batch"], calls["step"]
    # Every train call embeds its sample; the batch's last also runs the step, which embeds the
    # replay samples and trains the tail.
    embed = (batch - step) / bn
    tail_batch = step - br * embed
    per_sample = batch / (bn + br)
    tail = tail_batch / (bn + br)
    tail_macs = macs["tail_fwd"] + macs["tail_bwd"]
    return {
        "instructions_per_train_sample": per_sample,
        "instructions_per_streamed_sample": batch / bn,
        "backbone_fwd": embed,
        "tail_fwd_bwd_update": tail,
        "backbone_share": embed / per_sample,
        "instructions_per_mac": per_sample / macs["total"],
        "backbone_instructions_per_mac": embed / macs["backbone_fwd"] if macs["backbone_fwd"] else None,
        "tail_instructions_per_mac": tail / tail_macs if tail_macs else None,
        "inference": {"backbone_fwd": calls["backbone_fwd"], "predict": calls["predict"]},
        "backbone_layers": [
            {**l, "instructions_per_mac": round(l["instructions"] / l["macs"], 2) if l["macs"] else None}
            for l in calls["layers"]],
        "batch": {"new": bn, "replay": br, "instructions": batch, "step_instructions": step},
    }


def measure_model(name: str, demo: dict, tmp: Path, project: Path, echo=print) -> dict:
    from tinycil.deploy.export import export_run
    from tinycil.learn.prepare import prepare_run

    from tinycil.deploy.boards import load_board
    from tinycil.deploy.cut import cut_chooser, sized_cut_chooser

    started = time.monotonic()
    run_dir = tmp / f"run-{name}"
    # The model and cut `tinycil prepare --board` makes (the memory plan's trainable layers at
    # the widest scale that fits); the end-of-task class-balanced pass is off here, because the
    # device counts it into the task's instructions and this measures a streamed sample's cost.
    board = load_board(BOARD)
    prepare_run(demo["dataset"], run_dir, family=demo["family"], quick=True, board=BOARD,
                progress=False, echo=echo, tail_layers="auto", choose_cut=cut_chooser(board),
                choose_sized_cut=sized_cut_chooser(board), balance_steps=0, **demo["prepare"])
    exported = export_run(run_dir, BOARD, root=project)
    macs = macs_per_sample(run_dir)
    out_dir = tmp / f"image-{name}"
    out_dir.mkdir()
    calls = time_calls(project, out_dir, buffer_defines(run_dir))
    row = {"model": demo["label"], "dataset": demo["dataset"], "family": demo["family"],
           "signature": exported.signature_hex, "macs_per_train_sample": macs,
           "calls": split(calls, macs)}
    device = stream_one_task(project, run_dir, echo)
    bn, br = calls["batch_new"], calls["batch_replay"]
    per_stream = device["instructions_per_streamed_sample"]
    device["instructions_per_train_sample"] = per_stream * bn / (bn + br)
    device["instructions_per_mac"] = device["instructions_per_train_sample"] / macs["total"]
    row["device"] = device
    # The same task with the buffer holding latents (the run's export is then the latents one).
    export_run(run_dir, BOARD, root=project, buffer_store="latents")
    latent = stream_one_task(project, run_dir, echo)
    latent["instructions_per_train_sample"] = (latent["instructions_per_streamed_sample"]
                                               * bn / (bn + br))
    latent["saving"] = 1 - latent["instructions_per_streamed_sample"] / per_stream
    latent["same_accuracy_row"] = latent["row"] == device["row"]
    row["device_latent_replay"] = latent
    row["seconds"] = time.monotonic() - started
    return row


def measure(names=None, echo=print) -> dict:
    """{model name: row} for the demo models (all by default)."""
    from kernels_host.target import tools_available

    missing = tools_available()
    if missing:
        raise CostError(missing)
    names = list(names or DEMOS)
    unknown = [n for n in names if n not in DEMOS]
    if unknown:
        raise CostError(f"unknown demo model(s) {unknown}; choose from {', '.join(DEMOS)}")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="tinycil-cost-") as tmp:
        tmp = Path(tmp)
        saved_state = os.environ.get("TINYCIL_STATE_DIR")
        os.environ["TINYCIL_STATE_DIR"] = str(tmp / "state")
        try:
            project = private_project(tmp / "project")
            for name in names:
                echo(f"== {name}")
                rows[name] = measure_model(name, DEMOS[name], tmp, project, echo=echo)
                echo(summary_line(name, rows[name]))
        finally:
            if saved_state is None:
                os.environ.pop("TINYCIL_STATE_DIR", None)
            else:
                os.environ["TINYCIL_STATE_DIR"] = saved_state
    return rows


# ---- report ----------------------------------------------------------------------------------

def summary_line(name: str, r: dict) -> str:
    c, d = r["calls"], r["device"]
    return (f"{name}: {d['instructions_per_streamed_sample']:,.0f} instructions per streamed "
            f"sample on the device, {c['instructions_per_train_sample']:,.0f} per training "
            f"sample ({100 * c['backbone_share']:.0f}% backbone forward), "
            f"{r['macs_per_train_sample']['total']:,} MACs, {c['instructions_per_mac']:.2f} per MAC; "
            f"with latent replay {r['device_latent_replay']['instructions_per_streamed_sample']:,.0f} "
            f"per streamed sample ({100 * r['device_latent_replay']['saving']:.0f}% fewer)")


def headline(rows: dict) -> dict:
    """kernels.json's "instructions_per_train_sample": the device's figure per streamed sample,
    what a device run's RESULT reports."""
    return {name: round(r["device"]["instructions_per_streamed_sample"]) for name, r in rows.items()}


def markdown(rows: dict) -> list[str]:
    lines = [
        "## Instructions per training sample of the demo models",
        "",
        "One field task streamed to the product firmware on the emulated board (`tinycil.link.stream`, "
        "one epoch, quick prepare), counted by the device (STATS) under `-icount shift=0`; the "
        "split from a small image that times the runtime's own calls on the same export "
        "(`benchmarks/train_sample_cost.cpp`). The model and its trainable part are those "
        "`tinycil prepare --board mps2_an500` makes; the end-of-task class-balanced pass is off, "
        "because the device counts it into the task's instructions, not a streamed sample's. "
        "A mini-batch is `new + replay` samples; a "
        "*training sample* is one of them, a *streamed sample* carries `(new + replay) / new` of "
        "them. MACs per training sample from `tinycil.learn.models.count_cost` at the size the device "
        "trains (backbone forward; tail forward and backward, no input gradient below the tail).",
        "",
        "| model | batch new+replay | instr. / streamed sample (device) | instr. / training sample "
        "(device) | (timed calls) | backbone fwd | tail fwd+bwd+SGD | backbone share | "
        "MACs / training sample (backbone + tail) | instr. / MAC, whole step | backbone | tail |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        c, d, m = r["calls"], r["device"], r["macs_per_train_sample"]
        tail_ipm = "-" if c["tail_instructions_per_mac"] is None else f"{c['tail_instructions_per_mac']:.2f}"
        lines.append(
            f"| {r['model']} | {c['batch']['new']}+{c['batch']['replay']} | "
            f"{d['instructions_per_streamed_sample']:,.0f} | {d['instructions_per_train_sample']:,.0f} | "
            f"{c['instructions_per_train_sample']:,.0f} | {c['backbone_fwd']:,.0f} | "
            f"{c['tail_fwd_bwd_update']:,.0f} | {100 * c['backbone_share']:.0f}% | "
            f"{m['total']:,} ({m['backbone_fwd']:,} + {m['tail_fwd'] + m['tail_bwd']:,}) | "
            f"{c['instructions_per_mac']:.2f} | {_or_dash(c['backbone_instructions_per_mac'])} | "
            f"{tail_ipm} |")
    lines += ["", "With the replay buffer holding latents (`--replay-store latents`), the same task "
              "streamed to firmware built with the same run exported that way:", "",
              "| model | instr. / streamed sample, inputs buffer | latents buffer | fewer | "
              "same accuracy row |", "| --- | ---: | ---: | ---: | --- |"]
    for name, r in rows.items():
        d, lat = r["device"], r["device_latent_replay"]
        lines.append(f"| {r['model']} | {d['instructions_per_streamed_sample']:,.0f} | "
                     f"{lat['instructions_per_streamed_sample']:,.0f} | {100 * lat['saving']:.0f}% | "
                     f"{lat['same_accuracy_row']} |")
    no_backbone = [r["model"] for r in rows.values() if not r["calls"]["backbone_layers"]]
    if no_backbone:
        lines += ["", f"Without a frozen backbone ({', '.join(no_backbone)}: every layer trains) the "
                  "buffer's latents are its inputs, so both builds run the same steps."]
    lines += ["", dominance(rows), ""]
    if len(no_backbone) == len(rows):
        lines.append("")
        return lines
    lines += ["Backbone layers (int8 forward, one sample; each layer's instructions are the "
              "difference between running the first k and the first k - 1 layers):", "",
              "| model | layer | op | output | MACs | instructions | instr. / MAC |",
              "| --- | ---: | --- | --- | ---: | ---: | ---: |"]
    for name, r in rows.items():
        for l in r["calls"]["backbone_layers"]:
            ipm = "-" if l["instructions_per_mac"] is None else f"{l['instructions_per_mac']:.2f}"
            lines.append(f"| {name} | {l['index']} | {l['op']} | {'x'.join(map(str, l['output']))} | "
                         f"{l['macs']:,} | {l['instructions']:,} | {ipm} |")
    lines.append("")
    return lines


def _or_dash(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def dominance(rows: dict) -> str:
    noise = max(abs(r["device"]["instructions_per_train_sample"]
                    / r["calls"]["instructions_per_train_sample"] - 1) for r in rows.values())
    handler = ("the device's figure adds the serial handler and the receive interrupts that arrive "
               f"while it computes ({100 * noise:.2f}% at most here)")
    if all(not r["calls"]["backbone_layers"] for r in rows.values()):
        per_mac = "; ".join(f"{name} {r['calls']['tail_instructions_per_mac']:.2f}"
                            for name, r in rows.items())
        return ("What a training sample costs: every layer of these models trains on the device "
                "(the memory plan's cut: the whole model fits the board), so a training sample is "
                "the float32 forward pass, the backward pass and its share of the momentum update of "
                f"the whole model, and no int8 backbone runs. Instructions per MAC: {per_mac}. The "
                "float kernels alone run at 1.3-1.5 per MAC on the benchmark shapes above; on these "
                "small layers the work that does not shrink with the MACs weighs more: the first "
                "convolution's few taps per output (one to six input channels), pooling and ReLU forward "
                "and backward, the softmax cross-entropy, clipping, and the update of every weight "
                f"(spread over the mini-batch); {handler}.")
    parts, layers, taps = [], [], []
    for name, r in rows.items():
        c, m = r["calls"], r["macs_per_train_sample"]
        parts.append(f"{name} {100 * c['backbone_share']:.0f}% of the instructions for "
                     f"{100 * m['backbone_fwd'] / m['total']:.0f}% of the MACs")
        bl = c["backbone_layers"]
        if not bl:
            continue
        total = sum(l["instructions"] for l in bl) or 1
        top = max(bl, key=lambda l: l["instructions"])
        pools = sum(l["instructions"] for l in bl if l["op"] in ("max_pool", "avg_pool"))
        outputs = top["output"][0] * top["output"][1] * top["output"][2]
        taps.append(top["macs"] // outputs)
        ipm = (f", {top['macs'] // outputs} taps per output, {top['instructions_per_mac']:.1f} "
               "per MAC" if top["instructions_per_mac"] else "")
        layers.append(f"{name}: layer {top['index']} ({top['op']}, output "
                      f"{'x'.join(map(str, top['output']))}) {100 * top['instructions'] / total:.0f}%"
                      f"{ipm}; pooling {100 * pools / total:.0f}%")
    top = max(rows.values(), key=lambda r: r["calls"]["backbone_share"])
    low = min(rows.values(), key=lambda r: r["calls"]["backbone_share"])
    if low["calls"]["backbone_share"] >= 0.5:
        lead = "the frozen int8 backbone's forward pass dominates every training step"
    elif top["calls"]["backbone_share"] < 0.5:
        lead = "the float32 tail's forward, backward and update dominate every training step"
    else:
        lead = "which part dominates depends on the model"
    return (f"What dominates: {lead} ({'; '.join(parts)}): every training sample, streamed or "
            "replayed, runs the whole backbone, while the tail is a few small dense layers. "
            "Within the backbone the first convolution costs most "
            f"({'; '.join(layers)}): on few input channels a filter has only "
            f"{min(taps)} to {max(taps)} taps per output, so the work per output that does not shrink with the taps (exact requantisation, gathering and widening the input patch, block "
            "set-up) outweighs the multiply-accumulates, far from the 0.96 per MAC of the "
            "288-tap benchmark shape above; the int8 max pooling adds tens of instructions per "
            "output. The tail's cost per MAC includes the softmax cross-entropy, gradient "
            "clipping, the momentum SGD update of every weight (spread over the mini-batch) and "
            f"dequantising the latent; {handler}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEMOS), choices=list(DEMOS))
    args = ap.parse_args()
    rows = measure(args.models)
    print(json.dumps(rows, indent=2))
    print("\n".join(markdown(rows)))


if __name__ == "__main__":
    main()
