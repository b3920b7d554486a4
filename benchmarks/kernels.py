"""Instructions per multiply-accumulate of the kernels, and per training sample of the demo
models, on the emulated Cortex-M7.

Builds firmware/test_target/kernel_bench.cpp with the firmware's compiler flags and the board
support of mps2_an500, runs it under QEMU with -icount shift=0 (the board's counter then counts
instructions exactly); then measures every demo model's training step on the same board
(benchmarks/train_sample_cost.py: quick prepare, export, one task streamed to the product
firmware, and the runtime's calls timed in a small image). Writes benchmarks/results/kernels.json
and kernels.md.

    .venv/bin/python benchmarks/kernels.py [--only kernels|train-samples]

--only re-measures one part and keeps the other from the existing kernels.json.

The same image also runs whole training steps of a float32 MLP 196-64-10 (ReLU, softmax
cross-entropy, global-norm clipping, SGD with momentum 0.9) at batch 1 and batch 16, stage by
stage; the same MLP is then exported and stepped through the product runtime
(benchmarks/runtime_step_cost.cpp: tc_rt_train_samples, as the serial handler calls it). `--baseline REV` builds the image once more against the kernels of git revision REV (only
the calls that existed then) and records those figures as "before".
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from kernels_host.target import TARGET_DIR, build_image, run_image, tools_available  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import train_sample_cost  # noqa: E402
from tinycil import software  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results"

SHAPES = {
    "dense_f32_fwd": "batch 1, 256 -> 64",
    "dense_f32_bwd": "batch 1, 256 -> 64; input and weight gradients (2 MACs per weight)",
    "conv2d_f32_fwd": "18x18x16 -> 16x16x16, 3x3, stride 1, valid",
    "conv2d_f32_bwd": "same shape; input and weight gradients (2 MACs per weight use)",
    "conv2d_f32_1ch_fwd": "14x14x1 -> 14x14x16, 3x3, stride 1, same (a first layer trained on "
                          "the device; the taps on the padding counted)",
    "conv2d_f32_1ch_bwd": "same shape; weight and bias gradients only (a first layer has no input "
                          "gradient)",
    "conv2d_f32_5ch_fwd": "7x7x5 -> 7x7x9, 3x3, stride 1, same (a narrow second layer; the "
                          "taps on the padding counted)",
    "conv2d_f32_5ch_bwd": "same shape; input and weight gradients (2 MACs per weight use)",
    "conv2d_s8_fwd": "18x18x32 -> 16x16x32, 3x3, stride 1, valid, per-channel requantisation",
    "conv2d_s8_1ch_fwd": "14x14x1 -> 14x14x5, 3x3, stride 1, same, per-channel requantisation "
                         "(the Fashion-MNIST 14x14 demo model's first layer)",
    "fully_connected_s8": "batch 1, 256 -> 64, per-channel requantisation",
}
TARGETS = {"dense_f32_fwd": 1.5, "dense_f32_bwd": 2.5, "conv2d_s8_fwd": 1.0,
           "conv2d_s8_1ch_fwd": 3.0, "fully_connected_s8": 1.5}
WHY = {
    "dense_f32_fwd": "4 outputs x 8 inputs per loop: 5 VLDM + 32 VFMA + 2 loop instructions "
                     "(1.22 per MAC) plus per-row set-up.",
    "dense_f32_bwd": "input gradient as 4-row AXPY (1.25 per MAC); the weight gradient of the "
                     "first (here only) sample written as a 4-row outer product, one VLDM of "
                     "inputs and per row 8 VMUL and a VSTM (1.22 per MAC), so no buffer is "
                     "cleared; later samples add with a load and store of the gradient rows "
                     "(1.34 per MAC).",
    "conv2d_f32_fwd": "every kernel row is one contiguous dot product (NHWC, [out][kh][kw][in]) "
                      "through the same 4 x 8 blocked loop; the 48-tap rows leave a remainder "
                      "of 0 but add per-row call overhead.",
    "conv2d_f32_bwd": "the dense backward loops per kernel row, plus clearing dx/dw (VSTM of "
                      "sixteen zeros).",
    "conv2d_f32_1ch_fwd": "filter by filter, two filters per pass over the image: their 18 "
                          "weights stay in registers, and per pixel nine loads of the window, 18 "
                          "VFMA and two stores (about 2.5 per MAC inside the image); a border "
                          "pixel reads its missing taps as zero, as the simulation pads. Whether "
                          "the window's rows lie inside the image is settled once per output row, "
                          "where every pixel used to call the blocked loops per kernel row of "
                          "three taps and the border took the general path.",
    "conv2d_f32_5ch_fwd": "kernel rows of 15 taps, too short for the blocked loop's set-up per "
                          "call: a window inside the input is copied into one run of 45 floats "
                          "(VLDM/VSTM of eight), then one call per four filters over all of it; "
                          "a border window keeps one call per kernel row over its valid taps "
                          "(before, a call per kernel row everywhere, and a call per filter for "
                          "the last one to three taps of a row).",
    "conv2d_f32_5ch_bwd": "the same copy of the window and of its input gradient so far, one "
                          "4-row AXPY and one 4-row outer product per four filters over the whole "
                          "window, and the input gradient copied back.",
    "conv2d_f32_1ch_bwd": "the same two-filter passes with the 18 weight gradients and two bias "
                          "sums in registers over every pixel, each still accumulated pixel by "
                          "pixel in raster order (bit for bit the per-pixel loops), where every "
                          "pixel used to load and store all nine gradients of every filter.",
    "conv2d_s8_1ch_fwd": "rows slide: three input rows kept widened (offset added), two "
                         "neighbouring outputs per LDRD and four multiply-accumulates per kernel "
                         "row (21 instructions per 18 MACs with the bias and the store); then per "
                         "output about 8 instructions of exact requantisation (SMMLAR, shift, "
                         "SSAT, strided store; 3 more when the ReLU bound is above -128), which "
                         "with 9 taps is about 0.9 per MAC; the rest is two calls per row and "
                         "channel and widening each input row. Quantised as TFLite gives this "
                         "ReLU layer (input and output zero point -128).",
    "fully_connected_s8": "the input row widened once with its offset; two weight rows share each "
                          "LDM of four widened input words, per row one LDRD of eight weights, "
                          "four SXTB16, four SMLAD: 19 instructions per 16 MACs, four groups per "
                          "loop round (1.22 per MAC); plus per output about 14 instructions of "
                          "requantisation (the reference kernel's one rounding: SMMLA and a "
                          "shift) and set-up.",
    "conv2d_s8_fwd": "inner loop 2 channels x 3 pixels: per word of two int16 taps one LDRD "
                     "of weights, one LDM of three pixels' inputs and 6 SMLAD (8 instructions "
                     "per 12 MACs), four words per round plus 2 loop instructions: 0.71 per MAC "
                     "(all 14 general registers in use, so no larger block fits). Pixels come "
                     "in threes (258 computed for 256). The remaining ~0.25 per MAC: the exact "
                     "TFLite requantisation per output (about 25 instructions, 0.09 per MAC at "
                     "288 taps), gathering each input patch once per pixel block as int16 for "
                     "all 32 channels, widening the filters once per call, and per-block set-up.",
}


# The training step: an MLP 196-64-10, SGD with momentum 0.9, global-norm clipping.
MLP = "float32 MLP 196-64-10 (ReLU), softmax cross-entropy, global-norm clipping, SGD momentum 0.9"
MLP_PARAMS = 196 * 64 + 64 + 64 * 10 + 10
MLP_MACS = {"forward": 196 * 64 + 64 * 10, "backward": 196 * 64 + 2 * 64 * 10}
STEP_TARGETS = {"1": 70000, "16": 45000}  # instructions per training sample
# How each step is composed (the kernel calls of firmware/test_target/kernel_bench.cpp).
STEPS = {
    "batched": "the sequence the runtime ran before this work: batched forward and backward, the "
               "gradients overwritten, then the norm and clipping pass and the update with "
               "separately rounded products",
    "single": "batch 1: input gradients only, the norm as |dy|^2 |x|^2 per dense layer, the "
              "gradient formed in registers by the fused clip-and-momentum update "
              "(tc_sgd_momentum_outer_f32): never stored, cleared or read back",
    "accumulated": "batch 16 summed sample by sample (RAM for one sample's activations): per "
                   "sample forward, loss with factor 1/16 and backward into the gradient "
                   "buffers (the first sample overwrites them: no clearing), then the blocked "
                   "norm and the fused clip-and-momentum update (tc_sgd_momentum_fma_f32)",
}


# The same MLP through the PRODUCT runtime (tc_rt_train_samples), exported with an empty int8
# prefix so the whole model trains: benchmarks/runtime_step_cost.cpp.
RUNTIME_IMAGE = ROOT / "benchmarks" / "runtime_step_cost.cpp"
RUNTIME_STAGES = ("forward", "softmax_ce", "backward", "norm", "update")


def export_mlp(out_dir: Path) -> Path:
    """The MLP 196-64-10 as a runtime export (model_data.h/.cpp): dense layers over the int8
    input dequantised with scale 1/32, He-normal weights, 10 classes known, batch up to 16."""
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.export import ExportModel, export_model

    rng = np.random.default_rng(0)
    w1 = (rng.normal(0, np.sqrt(2 / 196), (64, 196))).astype(np.float32)
    w2 = (rng.normal(0, np.sqrt(2 / 64), (10, 64))).astype(np.float32)
    em = ExportModel(
        name="mlp-196-64-10", input_shape=(196,), input_scale=1 / 32, input_zero_point=0,
        table=[], latent_size=196, latent_scale=1 / 32, latent_zero_point=0,
        tail_weights=[w1, w2], tail_biases=[np.zeros(64, np.float32), np.zeros(10, np.float32)],
        tail_max=[(196, 64), (64, 10)], plan=[{"classes_seen": 10, "out": [64, 10]}],
        known_tasks=1, classes_max=10, buffer_x=np.zeros((0, 196), np.int8),
        buffer_y=np.zeros(0, np.uint8), buffer_ram_capacity=1,
        defaults={"lr": 0.01, "momentum": 0.9, "clip_norm": 0.0, "batch_new": 16,
                  "batch_replay": 0, "seed": 1})
    export_model(em, load_board("mps2_an500"), [out_dir])
    return out_dir


def build_runtime_image(model_dir: Path, out_dir: Path, stages: bool) -> Path:
    """The timing image with the product runtime and kernels, compiled like the on-target
    kernel images (product flags, board support, linker script)."""
    from kernels_host.host_lib import KERNELS_DIR
    from kernels_host.target import ARM_FLAGS, BOARD_DEFINES, BSP_DIR, BSP_SOURCES, LDSCRIPTS, \
        PROTOCOL_DIR

    runtime = ROOT / "firmware" / "lib" / "runtime"
    elf = out_dir / ("runtime_step_stages.elf" if stages else "runtime_step.elf")
    flags = [f for f in ARM_FLAGS if f != "-Werror"]  # the export is generated data
    sources = [RUNTIME_IMAGE, *BSP_SOURCES, *sorted(runtime.glob("*.cpp")),
               *sorted(KERNELS_DIR.glob("*.cpp"))]  # tc_model_source.cpp includes the export
    cmd = ["arm-none-eabi-g++", *flags, *BOARD_DEFINES,
           *(["-DTC_RT_STAGE_TICKS"] if stages else []),
           *(f"-I{d}" for d in [model_dir, runtime, KERNELS_DIR, TARGET_DIR, BSP_DIR, PROTOCOL_DIR]),
           "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
           f"-L{LDSCRIPTS}", "-T", str(LDSCRIPTS / "mps2_an500.ld"), "-Wl,--gc-sections",
           "-o", str(elf), *map(str, sources), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"the runtime step image did not build:\n{proc.stderr[-3000:]}")
    return elf


def measure_runtime_step() -> dict:
    """{variant: {batch: {"step": n, "call": n, stage: n, ...}}}: step and call from the image
    without stage marks (what the product runs), the stages from the one with them."""
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="tinycil-rtstep-") as tmp:
        tmp = Path(tmp)
        model_dir = export_mlp(tmp / "model")
        for stages in (False, True):
            elf = build_runtime_image(model_dir, tmp, stages)
            status, text = run_image(elf, timeout=600, icount=True)
            if status != 0:
                raise SystemExit(f"runtime step image failed with status {status}:\n{text}")
            for variant, batch, what, n in re.findall(r"RSTEP (\S+) (\d+) (\S+) (\d+)", text):
                if stages == (what in RUNTIME_STAGES):
                    out.setdefault(variant, {}).setdefault(batch, {})[what] = int(n)
    for variant, batches in out.items():
        for batch, row in batches.items():
            if set(row) != {"step", "call", *RUNTIME_STAGES}:
                raise SystemExit(f"runtime step output incomplete for {variant} batch {batch}: {row}")
    return out


def run_bench(kernels_dir: Path | None = None, defines: tuple[str, ...] = ()) -> str:
    missing = tools_available()
    if missing:
        raise SystemExit(missing)
    with tempfile.TemporaryDirectory(prefix="tinycil-bench-") as tmp:
        extra = {"kernels_dir": kernels_dir} if kernels_dir else {}
        elf = build_image(TARGET_DIR / "kernel_bench.cpp", [], Path(tmp), defines=defines, **extra)
        status, out = run_image(elf, timeout=600, icount=True)
    if status != 0:
        raise SystemExit(f"benchmark image failed with status {status}:\n{out}")
    return out


def parse_kernels(out: str) -> dict[str, dict]:
    rows = {}
    for name, instructions, macs in re.findall(r"BENCH (\S+) (\d+) (\d+)", out):
        rows[name] = {"instructions": int(instructions), "macs": int(macs),
                      "instructions_per_mac": round(int(instructions) / int(macs), 3)}
    return rows


def parse_steps(out: str) -> dict[str, dict[str, dict[str, int]]]:
    """{variant: {batch: {stage: instructions, ..., "total": n}}}; a variant ending in
    "_clipping" ran with a limit that always scales the gradient."""
    steps: dict = {}
    for variant, batch, stage, n in re.findall(r"STEP (\S+) (\d+) (\S+) (\d+)", out):
        steps.setdefault(variant, {}).setdefault(batch, {})[stage] = int(n)
    return steps


def per_sample(steps: dict) -> dict[str, dict[str, int]]:
    return {v: {b: round(st["total"] / int(b)) for b, st in bs.items()} for v, bs in steps.items()}


def measure() -> tuple[dict[str, dict], dict]:
    out = run_bench()
    rows = parse_kernels(out)
    if set(rows) != set(SHAPES):
        raise SystemExit(f"benchmark output incomplete:\n{out}")
    return rows, parse_steps(out)


def measure_baseline(rev: str) -> dict:
    """The same image against the kernels of revision `rev` (calls that existed then only)."""
    with tempfile.TemporaryDirectory(prefix="tinycil-baseline-") as tmp:
        kdir = Path(tmp) / "kernels"
        kdir.mkdir()
        names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:firmware/lib/kernels"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        for name in names:
            text = subprocess.run(["git", "show", f"{rev}:firmware/lib/kernels/{name}"], cwd=ROOT,
                                  capture_output=True, check=True).stdout
            (kdir / name).write_bytes(text)
        out = run_bench(kdir, ("TC_BENCH_OLD_API",))
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    return {"revision": commit, "kernels": parse_kernels(out), "train_step": parse_steps(out)}


def previous() -> dict:
    path = OUT_DIR / "kernels.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def runtime_markdown(runtime: dict) -> list[str]:
    """The product runtime's rows: per-sample cost and where its instructions go."""
    lines = [
        "",
        "### The product runtime's step",
        "",
        "The same MLP exported (empty int8 prefix: the whole model trains) and stepped through "
        "`tc_rt_train_samples`, the call the serial handler makes "
        "(`benchmarks/runtime_step_cost.cpp`, built with firmware/lib/runtime and the kernels). "
        "The step is `tc_rt_stats`' last_step_ticks (dequantising the int8 inputs, forward, loss, "
        "backward, norm, update); the call adds taking the samples in. Third step measured (the "
        "momentum is not zero).",
        "",
        "| batch | target | step per sample | (clipping) | call per sample | (clipping) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for batch in ("1", "16"):
        r, c = runtime["runtime"][batch], runtime["runtime_clipping"][batch]
        b = int(batch)
        lines.append(f"| {batch} | {STEP_TARGETS[batch]:,} | {r['step'] / b:,.0f} | "
                     f"{c['step'] / b:,.0f} | {r['call'] / b:,.0f} | {c['call'] / b:,.0f} |")
    lines += ["", "Where the runtime's instructions go (an image built with TC_RT_STAGE_TICKS, "
              "whose stage marks add a few dozen instructions each):", "",
              "| variant | batch | stage | instructions | per sample | share |",
              "| --- | ---: | --- | ---: | ---: | ---: |"]
    for variant in ("runtime", "runtime_clipping"):
        for batch in ("1", "16"):
            row = runtime[variant][batch]
            total = sum(row[k] for k in RUNTIME_STAGES)
            for k in RUNTIME_STAGES:
                lines.append(f"| {variant} | {batch} | {k} | {row[k]:,} | "
                             f"{row[k] / int(batch):,.0f} | {100 * row[k] / total:.0f}% |")
            lines.append(f"| {variant} | {batch} | **total** | {total:,} | "
                         f"{total / int(batch):,.0f} | 100% |")
    return lines + [""]


def step_markdown(steps: dict, before: dict | None) -> list[str]:
    ps = per_sample(steps)
    head = ps["single"]["1"], ps["accumulated"]["16"]
    head_clip = ps["single_clipping"]["1"], ps["accumulated_clipping"]["16"]
    lines = [
        "## A whole training step",
        "",
        f"{MLP}: {MLP_PARAMS:,} parameters, {MLP_MACS['forward']:,} MACs forward and "
        f"{MLP_MACS['backward']:,} backward (weight gradients, and input gradients of the "
        "second layer) per sample. Instructions per training sample (forward, loss, backward, "
        "norm, clip and update), on the emulated board as above. Clipping: a limit that never "
        "scales the gradient, and one that always does (the dearer case, in brackets).",
        "",
        "| batch | target | now | (clipping) | how | before | (clipping) |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    bps = per_sample(before["train_step"]) if before else None
    for batch, variant, now, now_clip in (("1", "single", head[0], head_clip[0]),
                                          ("16", "accumulated", head[1], head_clip[1])):
        was = f"{bps['batched'][batch]:,}" if bps else "-"
        was_clip = f"{bps['batched_clipping'][batch]:,}" if bps else "-"
        lines.append(f"| {batch} | {STEP_TARGETS[batch]:,} | {now:,} | {now_clip:,} | {variant} "
                     f"| {was} | {was_clip} |")
    if before:
        lines += ["", f"Before: the kernels of revision {before['revision']} running the "
                  "runtime's sequence of calls then (`batched` below)."]
    lines += ["", "Where the instructions go (one step, all its samples; clipping that never "
              "scales):", "",
              "| step | batch | stage | instructions | per sample | share |",
              "| --- | ---: | --- | ---: | ---: | ---: |"]
    tables = [("now", steps)] + ([(f"before ({before['revision']})", before["train_step"])]
                                 if before else [])
    for label, data in tables:
        for variant in ("single", "accumulated", "batched"):
            for batch, stages in sorted(data.get(variant, {}).items(), key=lambda kv: int(kv[0])):
                total = stages["total"]
                for stage, n in stages.items():
                    if stage == "total":
                        continue
                    lines.append(f"| {variant} ({label}) | {batch} | {stage} | {n:,} | "
                                 f"{n / int(batch):,.0f} | {100 * n / total:.0f}% |")
                lines.append(f"| {variant} ({label}) | {batch} | **total** | {total:,} | "
                             f"{total / int(batch):,.0f} | 100% |")
    lines += ["", "Steps:", ""] + [f"- `{k}`: {v}." for k, v in STEPS.items()] + [
        "",
        "What changed in the loop's own cost: the momentum update is one pass of fused "
        "multiply-adds (v = fmaf(m, v, g * s), w = fmaf(-lr, v, w)) over eight floats per VLDM, "
        "with the clipping factor folded in; the weight gradient of the first sample of a batch "
        "overwrites the buffer (no clearing) and the buffers of a cleared tensor use VSTM of "
        "sixteen zeros; the norm is one VFMA per element over sixteen floats per VLDM (batch "
        "1: two short sums per dense layer); ReLU is VCMP/VSEL; softmax cross-entropy computes "
        "each exponential once (inlined) and costs about as much as the last layer's forward "
        "pass. The weight matrix's forward pass, now 1.22 instructions per MAC, is the largest "
        "part left.",
        ""]
    return lines


def write(rows: dict[str, dict], models: dict[str, dict], steps: dict,
          before: dict | None, runtime: dict) -> None:
    out_dir = OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    ps = per_sample(steps)
    result = {
        "board": "mps2_an500 (QEMU, -icount shift=0: instruction counts, not cycles)",
        "software": software.versions(programs=True),
        "instructions_per_mac": {k: rows[k]["instructions_per_mac"] for k in SHAPES},
        "targets": TARGETS,
        "details": {k: {**rows[k], "shape": SHAPES[k]} for k in SHAPES},
        "train_step": {
            "model": MLP,
            "instructions_per_sample": {"batch_1": ps["single"]["1"],
                                        "batch_16": ps["accumulated"]["16"],
                                        "batch_1_clipping": ps["single_clipping"]["1"],
                                        "batch_16_clipping": ps["accumulated_clipping"]["16"]},
            "targets": {f"batch_{b}": t for b, t in STEP_TARGETS.items()},
            "stages": steps,
            "steps": STEPS,
            # the same MLP through the product runtime (tc_rt_train_samples)
            "runtime_instructions_per_sample": {
                f"batch_{b}{'_clipping' if v.endswith('clipping') else ''}":
                    round(runtime[v][b]["step"] / int(b))
                for v in ("runtime", "runtime_clipping") for b in ("1", "16")},
            "runtime": runtime,
        },
        "before": before,
        # per streamed training sample, as the device reports it (see train_sample_cost)
        "instructions_per_train_sample": train_sample_cost.headline(models),
        "train_sample_cost": models,
    }
    (out_dir / "kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Kernel cost on the emulated Cortex-M7",
        "",
        "Instructions per multiply-accumulate, counted with the board's timer under QEMU "
        "`-icount shift=0` (one instruction per virtual nanosecond). These are instruction "
        "counts, not Cortex-M7 cycles: no dual issue, caches or wait states.",
        "",
        "| kernel | shape | instructions | MACs | instr/MAC | target | met | why |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for k in SHAPES:
        r = rows[k]
        target = TARGETS.get(k)
        met = "-" if target is None else ("yes" if r["instructions_per_mac"] <= target else "no")
        lines.append(f"| {k} | {SHAPES[k]} | {r['instructions']} | {r['macs']} | "
                     f"{r['instructions_per_mac']:.3f} | {'-' if target is None else target} | "
                     f"{met} | {WHY[k]} |")
    if before:
        lines += ["", f"Before (the kernels of revision {before['revision']}, same image): " +
                  ", ".join(f"{k} {v['instructions_per_mac']:.3f}"
                            for k, v in before["kernels"].items()) + " instructions per MAC."]
    lines += [""] + step_markdown(steps, before) + runtime_markdown(runtime)
    lines += train_sample_cost.markdown(models)
    lines += [f"Software: {software.describe(result['software'])}.", "",
              "Regenerate: `.venv/bin/python benchmarks/kernels.py`.", ""]
    (out_dir / "kernels.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["kernels", "train-samples"],
                    help="re-measure one part, keep the other from the existing kernels.json")
    ap.add_argument("--baseline", metavar="REV",
                    help="also measure the kernels of git revision REV (recorded as 'before'; "
                         "without it the previous 'before' is kept)")
    args = ap.parse_args()
    old = previous()
    if args.only == "train-samples":
        if "details" not in old or set(old["details"]) != set(SHAPES) or "train_step" not in old:
            raise SystemExit("no kernels.json with these kernel figures yet: run without --only")
        rows = {k: {f: old["details"][k][f] for f in ("instructions", "macs", "instructions_per_mac")}
                for k in SHAPES}
        steps = old["train_step"]["stages"]
        runtime = old["train_step"].get("runtime") or measure_runtime_step()
    else:
        rows, steps = measure()
        runtime = measure_runtime_step()
    before = measure_baseline(args.baseline) if args.baseline else old.get("before")
    if args.only == "kernels":
        if "train_sample_cost" not in old:
            raise SystemExit("no kernels.json with training-sample figures yet: run without --only")
        models = old["train_sample_cost"]
    else:
        models = train_sample_cost.measure()
    write(rows, models, steps, before, runtime)
    for k in SHAPES:
        print(f"{k:18s} {rows[k]['instructions_per_mac']:.3f} instructions/MAC")
    for variant, batches in per_sample(steps).items():
        for batch, n in batches.items():
            print(f"train step {variant:22s} batch {batch:>2}: {n:,} instructions/sample")
    for variant, batches in runtime.items():
        for batch, r in batches.items():
            print(f"product runtime {variant:16s} batch {batch:>2}: "
                  f"{r['step'] / int(batch):,.0f} instructions/sample")
    for name, r in models.items():
        print(train_sample_cost.summary_line(name, r))


if __name__ == "__main__":
    main()
