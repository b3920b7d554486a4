"""Export of a prepared run to the firmware: the model as C arrays in firmware/generated/.

What is exported (all const, so it stays in flash; 16-byte aligned):
  * the frozen backbone as a layer table of int8 operators read back from the run's full-int8
    .tflite (tinycil.learn.quantize.read_layers): int8 weights, int32 biases, per-channel output
    multipliers and shifts computed here exactly as TFLite's QuantizeMultiplier does (double
    precision frexp), and the fused activation ranges;
  * the float32 tail (every layer after the cut: the last `tail_layers` weight layers with the
    pooling between them) with its weights after the known tasks, in the layouts the runtime's
    kernels take (tc_model.h: conv2d [out][kh][kw][in], depthwise [kh][kw][c], dense
    [out][in_h][in_w][in]);
  * the growth plan (the tail's widths per task), the input and latent quantisation;
  * the known tasks' int8 replay buffer and the size of the RAM area for the field tasks';
  * the training defaults; the static arena size from tinycil.deploy.memplan.

The model is data for the one runtime in firmware/lib/runtime: there are no per-model code paths.
Its signature is the first 8 bytes of a SHA-256 over everything exported; the run folder keeps it
in export/manifest.json so the bridge can compare it with the device's INFO.model_signature.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinycil import protocol_spec
from tinycil.deploy import memplan
from tinycil.learn.train import device_ingredients
from tinycil.runfolder import EXPORT_DIR, MANIFEST, ensure_device_key, read_signature  # noqa: F401

GENERATED_FILES = ("model_data.h", "model_data.cpp")
FORMAT_VERSION = 5               # TC_MODEL_FORMAT_VERSION in tc_model.h
# What a replay-buffer sample holds on the device, in the order of the protocol's codes.
BUFFER_STORES = protocol_spec.BUFFER_STORE_NAMES
MAX_TAIL_LAYERS = 12             # TC_MAX_TAIL_LAYERS
# The int8 convolution's working memory: at most this much, so a wide layer takes a few passes
# over its input instead of a large buffer.
KERNEL_SCRATCH_CAP = 16 * 1024

# tc_op_kind in tc_model.h
OP_CONV2D, OP_DEPTHWISE, OP_DENSE, OP_MAX_POOL, OP_AVG_POOL, OP_MEAN, OP_RESHAPE = 1, 2, 3, 4, 5, 6, 7
TAIL_OPS = {"conv2d": OP_CONV2D, "depthwise": OP_DEPTHWISE, "dense": OP_DENSE,
            "max_pool": OP_MAX_POOL, "avg_pool": OP_AVG_POOL}
PADDING = {"VALID": 0, "SAME": 1}
_NO_DATA_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")
SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
                 "AVERAGE_POOL_2D", "MEAN") + _NO_DATA_OPS


class ExportError(ValueError):
    """A run that cannot be exported; the message says what to change."""


@dataclass
class ExportResult:
    run_dir: Path
    board: str
    signature: bytes
    files: list[Path]
    manifest_path: Path
    memory: dict
    manifest: dict = field(default_factory=dict)

    @property
    def signature_hex(self) -> str:
        return self.signature.hex()


# --------------------------------------------------------------------------------------------
# TFLite's integer arithmetic, on the host


def round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return int(q_fixed), int(shift)


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for int8 (the float division as in C: float32)."""
    def q(f):
        return zero_point + round_half_away(float(np.float32(f) / np.float32(scale)))
    lo, hi = -128, 127
    if activation in (None, "NONE"):
        return lo, hi
    if activation == "RELU":
        return max(lo, q(0.0)), hi
    if activation == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise ExportError(f"fused activation {activation} is not supported by the int8 runtime; "
                      "use ReLU, ReLU6 or none in the backbone")


# --------------------------------------------------------------------------------------------
# The model as plain data


def _spatial(shape) -> tuple[int, int, int]:
    """(H, W, C) of an activation shape with the batch of one first."""
    s = [int(d) for d in shape[1:]]
    if len(s) == 3:
        return s[0], s[1], s[2]
    if len(s) == 2:
        return 1, s[0], s[1]
    if len(s) == 1:
        return 1, 1, s[0]
    raise ExportError(f"activation shape {tuple(shape)} has an unsupported rank")


def backbone_table(layers: list[dict]) -> list[dict]:
    """The runtime's layer table from tinycil.learn.quantize.read_layers' op list."""
    table = []
    for L in layers:
        op = L["op"]
        if op not in SUPPORTED_OPS:
            raise ExportError(
                f"the backbone holds a {op} operator, which the device runtime cannot run "
                f"(supported: {', '.join(SUPPORTED_OPS)}). Move the layer into the tail or choose "
                "another model family")
        inp, out = L["input"], L["output"]
        if inp["dtype"] != "int8" or out["dtype"] != "int8":
            raise ExportError(f"{op} works on {inp['dtype']}/{out['dtype']}: the backbone must "
                              "be full int8 (quantize_backbone)")
        in_h, in_w, in_c = _spatial(inp["shape"])
        out_h, out_w, out_c = _spatial(out["shape"])
        opts = L["options"]
        entry = {
            "op": OP_RESHAPE, "padding": 0, "stride_h": 1, "stride_w": 1, "k_h": 1, "k_w": 1,
            "depth_multiplier": 0, "in": (in_h, in_w, in_c), "out": (out_h, out_w, out_c),
            "in_zero_point": int(inp["zero_point"]), "out_zero_point": int(out["zero_point"]),
            "act_min": -128, "act_max": 127, "weights": None, "bias": None, "multiplier": None,
            "shift": None, "name": op,
        }
        if op in _NO_DATA_OPS:
            if inp["scale"] != out["scale"] or inp["zero_point"] != out["zero_point"]:
                raise ExportError(f"{op} changes the quantisation; the runtime treats it as a no-op")
            table.append(entry)
            continue
        entry["act_min"], entry["act_max"] = activation_range(
            opts.get("activation", "NONE"), out["scale"], int(out["zero_point"]))
        if op == "MEAN":
            table.append(_mean_entry(L, entry))
            continue
        if op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            if inp["scale"] != out["scale"] or inp["zero_point"] != out["zero_point"]:
                raise ExportError(f"{op} with different input and output quantisation is not "
                                  "supported")
            entry.update(op=OP_MAX_POOL if op == "MAX_POOL_2D" else OP_AVG_POOL,
                         padding=PADDING[opts["padding"]], stride_h=opts["stride_h"],
                         stride_w=opts["stride_w"], k_h=opts["filter_h"], k_w=opts["filter_w"])
            table.append(entry)
            continue
        # weight layers
        if np.any(np.asarray(L["weight_zero_points"]) != 0):
            raise ExportError(f"{op} has non-zero weight zero points: TFLite int8 weights are "
                              "symmetric; re-quantise with quantize_backbone")
        w = np.asarray(L["weights"], np.int8)
        n_out = out_c if op != "FULLY_CONNECTED" else int(w.shape[0])
        w_scales = np.broadcast_to(np.asarray(L["weight_scales"], np.float32), (n_out,))
        mult, shift = [], []
        for s in w_scales:
            m, sh = quantize_multiplier(float(inp["scale"]) * float(s) / float(out["scale"]))
            mult.append(m)
            shift.append(sh)
        entry.update(bias=np.asarray(L["bias"], np.int32), multiplier=np.asarray(mult, np.int32),
                     shift=np.asarray(shift, np.int32))
        if op == "CONV_2D":
            if opts.get("dilation_h", 1) != 1 or opts.get("dilation_w", 1) != 1:
                raise ExportError("dilated convolutions are not supported by the int8 runtime")
            entry.update(op=OP_CONV2D, padding=PADDING[opts["padding"]], stride_h=opts["stride_h"],
                         stride_w=opts["stride_w"], k_h=int(w.shape[1]), k_w=int(w.shape[2]),
                         weights=w.reshape(-1))
        elif op == "DEPTHWISE_CONV_2D":
            if opts.get("dilation_h", 1) != 1 or opts.get("dilation_w", 1) != 1:
                raise ExportError("dilated convolutions are not supported by the int8 runtime")
            entry.update(op=OP_DEPTHWISE, padding=PADDING[opts["padding"]],
                         stride_h=opts["stride_h"], stride_w=opts["stride_w"],
                         k_h=int(w.shape[1]), k_w=int(w.shape[2]),
                         depth_multiplier=max(1, out_c // in_c), weights=w.reshape(-1))
        else:  # FULLY_CONNECTED: flattens whatever comes in
            n_in = int(w.shape[1])
            if in_h * in_w * in_c != n_in:
                raise ExportError(f"FULLY_CONNECTED expects {n_in} inputs, gets "
                                  f"{in_h * in_w * in_c}")
            entry.update(op=OP_DENSE, **{"in": (1, 1, n_in), "out": (1, 1, n_out)},
                         weights=w.reshape(-1))
        table.append(entry)
    return table


def _mean_entry(L: dict, entry: dict) -> dict:
    """MEAN over the spatial axes (global average pooling) for tc_mean_s8.

    The table holds what TFLite's MEAN prepares: QuantizeMultiplier(input_scale / output_scale)
    (double precision) and both zero points; the kernel folds 1 / (H * W) in as TFLite's
    reference kernel does.
    """
    inp, out = L["input"], L["output"]
    rank = len(inp["shape"])
    operand = L["inputs"][1] if len(L["inputs"]) > 1 else None
    if operand is None or operand.get("data") is None:
        raise ExportError("MEAN's axes are not a constant of the model: export a backbone from "
                          "tinycil.learn.quantize.quantize_backbone")
    axes = sorted({int(a) % rank for a in np.ravel(operand["data"])})
    if rank not in (3, 4) or axes != list(range(1, rank - 1)):
        raise ExportError(f"MEAN over axes {axes} of a {tuple(inp['shape'])} tensor: the device "
                          "runtime averages over all spatial axes only (GlobalAveragePooling1D/2D)")
    if L["options"].get("keepDims") and rank == 4:
        # LiteRT's optimised kernel takes a float-derived path for exactly this case, which
        # differs from its reference kernel (and from tc_mean_s8) in the last bit.
        raise ExportError("MEAN with keep_dims over H and W of a 4-D tensor is not bit-exact on "
                          "the device: use GlobalAveragePooling2D(keepdims=False) and reshape "
                          "in the tail if needed")
    in_h, in_w, in_c = entry["in"]
    if int(np.prod(out["shape"][1:])) != in_c:
        raise ExportError(f"MEAN output {tuple(out['shape'])} does not keep the {in_c} channels")
    mult, shift = quantize_multiplier(float(inp["scale"]) / float(out["scale"]))
    entry.update(op=OP_MEAN, out=(1, 1, in_c), act_min=-128, act_max=127,
                 multiplier=np.array([mult], np.int32), shift=np.array([shift], np.int32))
    return entry


# The int8 conv kernel processes output channels in blocks of at most this many (kMaxBlock in
# tc_conv2d_s8.cpp); more scratch than a full block buys nothing.
CONV_S8_MAX_BLOCK = 32


def conv2d_s8_scratch_bytes(k_h: int, k_w: int, in_c: int, out_block: int) -> int:
    """Mirror of tc_conv2d_s8_scratch_bytes(): an int8 staging patch, three int16 input patches
    plus `out_block` widened filters. A test checks it against the C function built for the host."""
    kp = (k_h * k_w * in_c + 3) & ~3
    out_block = max(2, (out_block + 1) & ~1)
    return (3 + out_block) * kp * 2 + kp


def kernel_scratch_bytes(table) -> int:
    need = 0
    for e in table:
        if e["op"] == OP_CONV2D:
            block = min((e["out"][2] + 1) & ~1, CONV_S8_MAX_BLOCK)
            size = conv2d_s8_scratch_bytes(e["k_h"], e["k_w"], e["in"][2], block)
            while block > 2 and size > KERNEL_SCRATCH_CAP:
                block -= 2
                size = conv2d_s8_scratch_bytes(e["k_h"], e["k_w"], e["in"][2], block)
            need = max(need, size)
        elif e["op"] == OP_DEPTHWISE:
            need = max(need, 4 * e["out"][2])
    return (need + 15) // 16 * 16


def scratch_bytes(table) -> int:
    sizes = [int(np.prod(e["out"])) for e in table if e["op"] != OP_RESHAPE]
    return (max(sizes, default=0) + 15) // 16 * 16


# --------------------------------------------------------------------------------------------
# Reading the run folder


@dataclass
class ExportModel:
    """Everything exported, as numpy arrays and plain values (independent of the run folder)."""

    name: str
    input_shape: tuple[int, ...]
    input_scale: float
    input_zero_point: int
    table: list[dict]
    latent_size: int
    latent_scale: float
    latent_zero_point: int
    tail_weights: list[np.ndarray]   # float32 after the known tasks: [out][rest] (dense, conv2d),
    tail_biases: list[np.ndarray]    # [taps][channels] (depthwise), empty (pooling)
    tail_max: list[tuple[int, int]]  # (in, out) channels at the final size
    plan: list[dict]                 # classes_seen, out (per tail layer)
    known_tasks: int
    classes_max: int
    buffer_x: np.ndarray             # int8 [n, input_size], or [n, latent_size] (buffer_store)
    buffer_y: np.ndarray             # uint8 class indices (output units)
    buffer_ram_capacity: int
    defaults: dict                   # lr, momentum, clip_norm, batch_new, batch_replay, seed,
                                     # balance_lr_scale, balance_steps, asymmetric_ce,
                                     # replay_shift
    buffer_store: str = "inputs"     # one of BUFFER_STORES
    # Per tail layer: op (conv2d, depthwise, dense, max_pool, avg_pool), relu, padding, strides,
    # kernel, in_hw, out_hw (models.tail_layer_specs without the weights). None: a chain of
    # dense layers over vectors, ReLU after all but the last.
    tail_layout: list[dict] | None = None
    # "keras" or "tflite" for a user's own model (prepare --model): the memory check then
    # advises only what acts on that model.
    own_model: str | None = None

    @property
    def layout(self) -> list[dict]:
        if self.tail_layout is not None:
            return self.tail_layout
        n = len(self.tail_weights)
        return [{"op": "dense", "relu": l < n - 1, "padding": "VALID", "strides": (1, 1),
                 "kernel": (1, 1), "in_hw": (1, 1), "out_hw": (1, 1)} for l in range(n)]

    def tail_init(self) -> list[tuple[int, int]]:
        """(in, out) channels of every tail layer after the known tasks."""
        out = []
        for l, (w, b, spec) in enumerate(zip(self.tail_weights, self.tail_biases, self.layout)):
            if spec["op"] in ("dense", "conv2d"):
                taps = int(np.prod(spec["in_hw"] if spec["op"] == "dense" else spec["kernel"]))
                out.append((int(w.size // max(1, w.shape[0]) // taps), int(w.shape[0])))
            elif spec["op"] == "depthwise":
                out.append((int(b.size), int(b.size)))
            else:  # pooling keeps the channels of the layer before it (or the latent's)
                c = out[-1][1] if out else int(self.tail_max[l][0])
                out.append((c, c))
        return out

    @property
    def buffer_sample_size(self) -> int:
        return self.latent_size if self.buffer_store == "latents" else self.input_size

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def max_batch(self) -> int:
        return int(self.defaults["batch_new"]) + int(self.defaults["batch_replay"])

    def footprint(self) -> memplan.Footprint:
        backbone = 0
        for e in self.table:
            for key, size in (("weights", 1), ("bias", 4), ("multiplier", 4), ("shift", 4)):
                if e[key] is not None:
                    backbone += size * int(np.asarray(e[key]).size)
            backbone += 64  # the table entry
        init = self.tail_init()
        specs = tuple(memplan.TailSpec(
            TAIL_OPS[spec["op"]], tuple(spec["in_hw"]), tuple(spec["out_hw"]),
            tuple(spec["kernel"]), int(i), int(o), int(ii), int(oi))
            for spec, (i, o), (ii, oi) in zip(self.layout, self.tail_max, init))
        return memplan.Footprint(
            input_size=self.input_size, latent_size=self.latent_size,
            tail=tuple((int(i), int(o)) for i, o in self.tail_max), tail_init=tuple(init),
            tail_specs=specs,
            max_batch=self.max_batch, scratch_bytes=scratch_bytes(self.table),
            kernel_scratch_bytes=kernel_scratch_bytes(self.table),
            buffer_flash_count=int(len(self.buffer_y)),
            buffer_ram_capacity=int(self.buffer_ram_capacity),
            backbone_bytes=backbone, plan_steps=len(self.plan),
            buffer_sample_size=self.buffer_sample_size)


def _config_get(cfg: dict, *keys, default=None):
    """The first of `keys` found in the config or its "training" section."""
    for section in (cfg, cfg.get("training") or {}, cfg.get("train") or {}):
        for k in keys:
            if k in section and section[k] is not None:
                return section[k]
    return default


def _task_classes(cfg: dict, plan: list) -> list[list[int]]:
    tasks = cfg.get("task_classes") or cfg.get("tasks")
    if isinstance(tasks, list) and tasks and isinstance(tasks[0], list):
        return [[int(c) for c in t] for t in tasks]
    if plan and "classes" in plan[0]:
        return [[int(c) for c in step["classes"]] for step in plan]
    raise ExportError("the run's config.json lists no classes per task (\"tasks\") and its "
                      "plan.json none either: re-create the run with `tinycil prepare`")


def _find_tflite(run, cfg: dict) -> Path | None:
    name = cfg.get("backbone_file")
    if name and (Path(run.path) / name).is_file():
        return Path(run.path) / name
    for attr in ("backbone_path", "tflite_path"):
        p = getattr(run, attr, None)
        if p is not None and Path(p).is_file():
            return Path(p)
    found = sorted(Path(run.path).glob("*.tflite"))
    return found[0] if found else None


def load_export_model(run_dir, buffer_store: str | None = None) -> ExportModel:
    """Read a prepared run folder into an ExportModel. `buffer_store` (one of BUFFER_STORES)
    overrides the run's "replay_store" (default "inputs")."""
    from tinycil.learn.models import (ModelError, layer_channels, split_model, tail_layer_specs,
                                      weight_kinds, weight_layers)
    from tinycil.learn.quantize import (QuantizedModel, QuantizeError, quantize_backbone, quantize_inputs,
                                  read_layers)
    from tinycil.runfolder import RunFolder

    run = RunFolder(run_dir)
    cfg = run.read_config()
    plan_doc = run.read_plan()
    plan_list = plan_doc["tasks"] if isinstance(plan_doc, dict) and "tasks" in plan_doc else plan_doc
    if not isinstance(plan_list, list) or not plan_list:
        raise ExportError(f"{run.plan_path} holds no growth plan (a list of per-task entries)")
    tasks = _task_classes(cfg, plan_list)
    store = buffer_store or cfg.get("replay_store") or "inputs"
    if store not in BUFFER_STORES:
        raise ExportError(f"the replay buffer can hold {' or '.join(BUFFER_STORES)}, not {store!r}")
    known = int(_config_get(cfg, "known_tasks", "known", default=1))
    if not 1 <= known <= len(tasks):
        raise ExportError(f"known_tasks must be between 1 and {len(tasks)}, config says {known}")
    tail_layers = int(_config_get(cfg, "tail_layers", default=2))

    model = run.load_model()
    try:
        backbone, tail = split_model(model, tail_layers)
        specs = tail_layer_specs(tail)
    except ModelError as exc:
        raise ExportError(f"the run's model cannot be cut there: {exc}") from exc
    if len(specs) > MAX_TAIL_LAYERS:
        raise ExportError(f"the tail holds {len(specs)} layers, the runtime at most "
                          f"{MAX_TAIL_LAYERS}: train fewer layers (--trainable)")

    # Known tasks' buffers (int8 inputs, output-unit labels).
    order = [c for t in tasks for c in t]
    unit_of = {c: k for k, c in enumerate(order)}
    bufs = [run.load_buffer(t) for t in range(known) if run.buffer_path(t).is_file()]

    tflite = _find_tflite(run, cfg)
    if tflite is not None:
        tflite_bytes = tflite.read_bytes()
    else:
        if not bufs:
            raise ExportError(f"{run.path} has neither a backbone .tflite nor buffer samples to "
                              "calibrate one: re-run `tinycil prepare`")
        rep = np.concatenate([b["x"] for b in bufs]).astype(np.float32)
        tflite_bytes = quantize_backbone(backbone, rep).tflite_bytes
    if len(tflite_bytes) == 0:
        # Empty backbone (the whole model trains): the latent is the int8 input itself.
        iq = cfg.get("input_quantization") or {}
        if "scale" not in iq:
            raise ExportError("the run has no backbone and its config.json no "
                              "input_quantization: re-run `tinycil prepare`")
        io = {"shape": [1, *cfg["input_shape"]], "scale": float(iq["scale"]),
              "zero_point": int(iq["zero_point"])}
        layers, first, last = [], io, io
    else:
        try:
            layers = read_layers(tflite_bytes)
        except QuantizeError as exc:
            raise ExportError(f"cannot read the backbone .tflite: {exc}") from exc
        first, last = layers[0]["input"], layers[-1]["output"]
    table = backbone_table(layers)
    input_shape = tuple(int(d) for d in first["shape"][1:])
    latent_size = int(np.prod(last["shape"][1:]))

    xs, ys = [], []
    for t, b in zip(range(known), bufs):
        x8 = b.get("x_int8")
        if x8 is None:
            x8 = quantize_inputs(b["x"], first["scale"], first["zero_point"])
        xs.append(np.asarray(x8, np.int8).reshape(len(x8), -1))
        ys.append(_buffer_units(np.asarray(b["y"]), tasks[t], unit_of, t))
    size = int(np.prod(input_shape))
    buffer_x = np.concatenate(xs) if xs else np.zeros((0, size), np.int8)
    buffer_y = np.concatenate(ys).astype(np.uint8) if ys else np.zeros(0, np.uint8)
    if buffer_x.shape[1] != size:
        raise ExportError(f"buffer samples have {buffer_x.shape[1]} values, the model's input "
                          f"{size}")
    if store == "latents" and len(buffer_x):
        # What the device's backbone makes of each sample: LiteRT is bit-exact with it.
        backbone_q = QuantizedModel(tflite_bytes, float(first["scale"]), int(first["zero_point"]),
                                    float(last["scale"]), int(last["zero_point"]), input_shape,
                                    tuple(int(d) for d in last["shape"][1:]))
        buffer_x = backbone_q.run(buffer_x.reshape(len(buffer_x), *input_shape))
        buffer_x = buffer_x.reshape(len(buffer_x), latent_size)
    elif store == "latents":
        buffer_x = np.zeros((0, latent_size), np.int8)

    # Growth plan of the tail: the output channels of every tail layer per task.
    kinds = weight_kinds(model)  # a family's, or a user's own model's (prepare --model)
    n_weight = len(weight_layers(model))
    plan = []
    for step in plan_list:
        outputs = int(step.get("outputs", step["classes_seen"]))
        channels = layer_channels(kinds, step["widths"], outputs)[n_weight - tail_layers:]
        plan.append({"classes_seen": outputs, "out": tail_channels(specs, channels)})
    for a, b in zip(plan, plan[1:]):
        if any(y < x for x, y in zip(a["out"], b["out"])):
            raise ExportError("the growth plan shrinks a tail layer; widths must not decrease")
    weights, biases, layout = tail_arrays(specs)
    start = plan[known - 1]["out"]
    got = [int(spec["out_c"]) for spec in specs]
    if got != start:
        raise ExportError(f"the run's model has tail channels {got} but its plan says {start} "
                          f"after the known tasks: re-run `tinycil prepare`")
    first_in = int(np.prod(specs[0]["in_hw"])) * int(specs[0]["in_c"])
    if first_in != latent_size:
        raise ExportError(f"the tail takes {first_in} inputs, the backbone gives {latent_size}")
    final = plan[-1]["out"]
    tail_max = [(int(specs[0]["in_c"]) if l == 0 else final[l - 1], final[l])
                for l in range(len(final))]

    per_class = max((np.bincount(y).max() for y in ys if len(y)), default=1)
    ram_capacity = _field_buffer_capacity(cfg, tasks, known, per_class)
    defaults = {
        "lr": float(_config_get(cfg, "lr", default=0.05)),
        "momentum": float(_config_get(cfg, "momentum", default=0.9)),
        "clip_norm": float(_config_get(cfg, "clip_norm", default=5.0)),
        "batch_new": int(_config_get(cfg, "batch_new", default=32)),
        "batch_replay": int(_config_get(cfg, "batch_replay", default=32)),
        "seed": int(_config_get(cfg, "seed", default=0)),
        # A run prepared before these existed trained without them: off.
        "balance_lr_scale": float(_config_get(cfg, "balance_lr_scale", default=0.1)),
        "balance_steps": int(_config_get(cfg, "balance_steps", default=0)),
        "asymmetric_ce": int(bool(_config_get(cfg, "asymmetric_ce", default=False))),
        "replay_shift": int(_config_get(cfg, "replay_shift", default=0)),
        "discriminant_weight": float(_config_get(cfg, "discriminant_weight", default=0.0)),
        "discriminant_shrinkage": float(_config_get(cfg, "discriminant_shrinkage", default=0.1)),
    }
    return ExportModel(
        name=Path(run.path).resolve().name, input_shape=input_shape,
        input_scale=float(first["scale"]), input_zero_point=int(first["zero_point"]), table=table,
        latent_size=latent_size, latent_scale=float(last["scale"]),
        latent_zero_point=int(last["zero_point"]), tail_weights=weights, tail_biases=biases,
        tail_max=tail_max, plan=plan, known_tasks=known, classes_max=int(plan[-1]["classes_seen"]),
        buffer_x=buffer_x, buffer_y=buffer_y, buffer_ram_capacity=ram_capacity, defaults=defaults,
        buffer_store=store, tail_layout=layout,
        own_model=(cfg.get("user_model") or {}).get("format"))


def tail_arrays(specs: list[dict]):
    """(weights, biases, layout) of models.tail_layer_specs as ExportModel holds them: weights
    2-D in the runtime's layout (rows: output channels; a depthwise kernel's taps), empty for
    pooling; layout without the arrays."""
    weights, biases = [], []
    for spec in specs:
        if spec["weights"] is None:
            weights.append(np.zeros((0,), np.float32))
            biases.append(np.zeros((0,), np.float32))
            continue
        w = spec["weights"]
        rows = w.shape[0] * w.shape[1] if spec["op"] == "depthwise" else w.shape[0]
        weights.append(np.ascontiguousarray(w.reshape(rows, -1), np.float32))
        biases.append(np.asarray(spec["bias"], np.float32))
    layout = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()
               if k in ("op", "relu", "padding", "strides", "kernel", "in_hw", "out_hw")}
              for spec in specs]
    return weights, biases, layout


def tail_channels(specs: list[dict], weight_channels: list[int]) -> list[int]:
    """Output channels of every tail layer from those of the tail's weight layers (conv2d,
    depthwise, dense, in order); pooling layers keep the channels they are given."""
    it = iter(weight_channels)
    out, ch = [], int(specs[0]["in_c"])
    for spec in specs:
        if spec["op"] in ("dense", "conv2d", "depthwise"):
            ch = int(next(it))
        out.append(ch)
    return out


def _buffer_units(y: np.ndarray, classes: list[int], unit_of: dict, task: int) -> np.ndarray:
    """Buffer labels as output units: the run stores either class ids or output units."""
    units = {unit_of[c] for c in classes}
    vals = set(int(v) for v in np.unique(y))
    if vals <= units:
        return y.astype(np.int64)
    if vals <= set(classes):
        return np.array([unit_of[int(v)] for v in y], np.int64)
    raise ExportError(f"buffer of task {task} has labels {sorted(vals)} that are neither the "
                      f"task's classes {classes} nor their output units {sorted(units)}")


def _field_buffer_capacity(cfg: dict, tasks, known: int, per_class: int) -> int:
    """RAM replay slots for the tasks learnt in the field (their distilled samples join it).

    Exact when the config records the training samples per task; otherwise the known tasks'
    samples per class times the field tasks' classes.
    """
    field_tasks = tasks[known:]
    per_task = (cfg.get("buffer") or {}).get("samples_per_task") or cfg.get("buffer_samples_per_task")
    if isinstance(per_task, list) and len(per_task) == len(tasks):
        return int(sum(per_task[known:]))
    fraction = _config_get(cfg, "buffer_fraction")
    train_counts = cfg.get("train_samples_per_task")
    if fraction is not None and isinstance(train_counts, list) and len(train_counts) == len(tasks):
        return int(sum(max(len(t), round(float(fraction) * n))
                       for t, n in zip(field_tasks, train_counts[known:])))
    return int(sum(per_class * len(t) for t in field_tasks))


# --------------------------------------------------------------------------------------------
# Signature and C source


def _arrays(em: ExportModel) -> list[tuple[str, np.ndarray]]:
    out = []
    for i, e in enumerate(em.table):
        for key in ("weights", "bias", "multiplier", "shift"):
            if e[key] is not None:
                out.append((f"layer{i}_{key}", np.ascontiguousarray(e[key])))
    for l, (w, b) in enumerate(zip(em.tail_weights, em.tail_biases)):
        if w.size == 0:
            continue  # pooling: no parameters
        out.append((f"tail{l}_weights", np.ascontiguousarray(w, np.float32)))
        out.append((f"tail{l}_bias", np.ascontiguousarray(b, np.float32)))
    out.append(("buffer_x", np.ascontiguousarray(em.buffer_x, np.int8)))
    out.append(("buffer_y", np.ascontiguousarray(em.buffer_y, np.uint8)))
    return out


def _meta(em: ExportModel) -> dict:
    return {
        "format": FORMAT_VERSION, "input_shape": list(em.input_shape),
        "input_scale": np.float32(em.input_scale).tobytes().hex(),
        "input_zero_point": em.input_zero_point,
        "layers": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in e.items()
                    if k not in ("weights", "bias", "multiplier", "shift")} for e in em.table],
        "latent": [em.latent_size, np.float32(em.latent_scale).tobytes().hex(), em.latent_zero_point],
        "tail_max": [list(t) for t in em.tail_max], "plan": em.plan, "known_tasks": em.known_tasks,
        "tail_layout": em.tail_layout,
        "classes_max": em.classes_max, "buffer_ram_capacity": em.buffer_ram_capacity,
        "buffer_store": em.buffer_store,
        "defaults": {k: (np.float32(v).tobytes().hex() if isinstance(v, float) else v)
                     for k, v in em.defaults.items()},
    }


def signature(em: ExportModel) -> bytes:
    """First 8 bytes of SHA-256 over the exported metadata and arrays (canonical order)."""
    h = hashlib.sha256()
    h.update(json.dumps(_meta(em), sort_keys=True).encode())
    for name, arr in _arrays(em):
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(np.asarray(arr.shape, np.int64).tobytes())
        h.update(arr.tobytes())
    return h.digest()[:8]


_CTYPE = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int32): "int32_t",
          np.dtype(np.float32): "float"}


def _c_float(v) -> str:
    v = float(np.float32(v))
    if not math.isfinite(v):
        raise ExportError("the model holds a non-finite float (NaN or infinity): retrain it")
    return v.hex() + "f" if v != 0 else "0.0f"


def _c_array(name: str, arr: np.ndarray) -> str:
    flat = np.asarray(arr).reshape(-1)
    ctype = _CTYPE[flat.dtype]
    if flat.dtype == np.float32:
        items = [_c_float(v) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    n = max(1, len(items))
    if not items:
        items = ["0"]
    per_line = 8 if flat.dtype == np.float32 else 24
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines)
    return f"alignas(16) const {ctype} {name}[{n}] = {{\n    {body}\n}};\n"


def render_sources(em: ExportModel, sig: bytes, arena: int, run_name: str) -> dict[str, str]:
    """The contents of model_data.h and model_data.cpp."""
    banner = (f"// Generated by `tinycil export` from run \"{run_name}\", model signature {sig.hex()}.\n"
              f"// Do not edit: export again to change it.\n")
    header = (banner + "#pragma once\n\n#include \"tc_model.h\"\n\n"
              "#define TC_HAS_MODEL 1\n"
              f"#define TC_ARENA_BYTES {arena}u\n"
              f"#define TC_MODEL_SIGNATURE_HEX \"{sig.hex()}\"\n\n"
              "extern const tc_model tc_model_data;\n")
    arrays = dict(_arrays(em))
    parts = [banner, "#include \"model_data.h\"\n\nnamespace {\n\n"]
    for name, arr in arrays.items():
        parts.append(_c_array(name, arr))
    parts.append("\nconst tc_layer layers[] = {\n")
    for i, e in enumerate(em.table):
        def ref(key):
            return f"layer{i}_{key}" if e[key] is not None else "nullptr"
        parts.append(
            f"    {{{e['op']}, {e['padding']}, {e['stride_h']}, {e['stride_w']}, {e['k_h']}, "
            f"{e['k_w']}, {e['depth_multiplier']}, {e['in'][0]}, {e['in'][1]}, {e['in'][2]}, "
            f"{e['out'][0]}, {e['out'][1]}, {e['out'][2]}, {e['in_zero_point']}, "
            f"{e['out_zero_point']}, {e['act_min']}, {e['act_max']}, {ref('weights')}, "
            f"{ref('bias')}, {ref('multiplier')}, {ref('shift')}}},  // {e['name']}\n")
    if not em.table:
        parts.append("    {}\n")
    parts.append("};\n\nconst tc_tail_layer tail[] = {\n")
    for l, (w, spec, (i0, o0), (n_in, n_out)) in enumerate(
            zip(em.tail_weights, em.layout, em.tail_init(), em.tail_max)):
        refs = (f"tail{l}_weights, tail{l}_bias" if w.size else "nullptr, nullptr")
        (ih, iw), (oh, ow) = spec["in_hw"], spec["out_hw"]
        (sh, sw), (kh, kw) = spec["strides"], spec["kernel"]
        parts.append(f"    {{{TAIL_OPS[spec['op']]}, {int(bool(spec['relu']))}, "
                     f"{PADDING[spec['padding']]}, {sh}, {sw}, {kh}, {kw}, {ih}, {iw}, {oh}, {ow}, "
                     f"{i0}, {o0}, {n_in}, {n_out}, {refs}}},  // {spec['op']}\n")
    parts.append("};\n\nconst tc_plan_step plan[] = {\n")
    for step in em.plan:
        outs = ", ".join(str(v) for v in step["out"])
        parts.append(f"    {{{step['classes_seen']}, {{{outs}}}}},\n")
    d = em.defaults
    ing = device_ingredients(d)  # defaults written without them: off
    shape = list(em.input_shape) + [0] * (4 - len(em.input_shape))
    fp = em.footprint()
    parts.append(
        "};\n\n}  // namespace\n\n"
        "const tc_model tc_model_data = {\n"
        f"    {FORMAT_VERSION},\n"
        f"    {{{', '.join(f'0x{b:02x}' for b in sig)}}},\n"
        f"    {len(em.input_shape)}, {{{', '.join(map(str, shape))}}}, {em.input_size}u, "
        f"{_c_float(em.input_scale)}, {em.input_zero_point},\n"
        f"    {len(em.table)}, layers, {fp.scratch_bytes}u, {fp.kernel_scratch_bytes}u,\n"
        f"    {em.latent_size}u, {_c_float(em.latent_scale)}, {em.latent_zero_point},\n"
        f"    {len(em.tail_weights)}, tail, {len(em.plan)}, {em.known_tasks}, plan, "
        f"{em.classes_max},\n"
        f"    {len(em.buffer_y)}u, buffer_x, buffer_y, {em.buffer_ram_capacity}u,\n"
        f"    {em.max_batch},\n"
        f"    {{{_c_float(d['lr'])}, {_c_float(d['momentum'])}, {_c_float(d['clip_norm'])}, "
        f"{d['batch_new']}, {d['batch_replay']}, {d['seed']}u, {_c_float(ing['balance_lr_scale'])}, "
        f"{ing['balance_steps']}, {int(ing['asymmetric_ce'])}, {int(ing['replay_shift'])}, "
        f"{_c_float(ing['discriminant_weight'])}, {_c_float(ing['discriminant_shrinkage'])}}},\n"
        f"    {arena}u,\n"
        f"    {BUFFER_STORES.index(em.buffer_store)},  // buffer_store: {em.buffer_store}\n"
        "};\n")
    return {"model_data.h": header, "model_data.cpp": "".join(parts)}


def generated_dir(root: Path | None = None) -> Path:
    from tinycil.deploy.boards import project_root

    return (root or project_root()) / "firmware" / "generated"


def export_model(em: ExportModel, board, out_dirs: list[Path], run_name: str | None = None,
                 what: str | None = None, device_key: bytes | None = None
                 ) -> tuple[bytes, memplan.MemoryPlan, list[Path]]:
    """Check the memory plan, then write the sources into every folder of `out_dirs`.
    `device_key` (the run's, RUN/device_key) goes into model_data.h as TC_DEVICE_KEY: the
    firmware then changes what it learned only for a host session that presents it."""
    fp = em.footprint()
    if em.classes_max > 256:
        raise ExportError(f"{em.classes_max} classes: the runtime holds at most 256")
    if any(n > 65535 for pair in em.tail_max for n in pair):
        raise ExportError("a tail layer is wider than 65535 units")
    plan = memplan.check_fits(fp, board, what or f"run {run_name or em.name}",
                              own_model=em.own_model)
    sig = signature(em)
    sources = render_sources(em, sig, memplan.arena_bytes(fp), run_name or em.name)
    if device_key is not None:
        sources["model_data.h"] += ("#define TC_DEVICE_KEY {"
                                    + ", ".join(f"0x{b:02x}" for b in device_key) + "}\n")
    written = []
    for folder in out_dirs:
        folder.mkdir(parents=True, exist_ok=True)
        for fname, text in sources.items():
            path = folder / fname
            path.write_text(text)
            written.append(path)
    return sig, plan, written


def export_run(run_dir, board, root: Path | None = None, firmware: bool = True,
               buffer_store: str | None = None) -> ExportResult:
    """Export a prepared run for `board` (id or Board) into firmware/generated/ and RUN/export/.

    firmware=False writes only RUN/export/ (what the host twin builds from). `buffer_store`
    overrides what the run's config says the replay buffer holds.
    """
    from tinycil.deploy.boards import load_board

    b = load_board(board, root) if isinstance(board, str) else board
    run_dir = Path(run_dir)
    em = load_export_model(run_dir, buffer_store)
    out_dirs = [run_dir / EXPORT_DIR]
    if firmware:
        out_dirs.append(generated_dir(root))
    sig, plan, written = export_model(em, b, out_dirs, run_name=em.name,
                                      device_key=ensure_device_key(run_dir))
    fp = em.footprint()
    manifest = {
        "signature": sig.hex(), "board": b.id, "run": em.name, "format": FORMAT_VERSION,
        "input_shape": list(em.input_shape), "input_scale": em.input_scale,
        "input_zero_point": em.input_zero_point, "latent_size": em.latent_size,
        "classes_max": em.classes_max, "known_tasks": em.known_tasks, "plan": em.plan,
        "backbone_layers": [e["name"] for e in em.table],
        "buffer": {"flash_samples": int(len(em.buffer_y)), "ram_capacity": em.buffer_ram_capacity,
                   "bytes": int(em.buffer_x.nbytes), "store": em.buffer_store,
                   "sample_bytes": em.buffer_sample_size},
        "arena_bytes": memplan.arena_bytes(fp), "memory": plan.to_dict(),
        "training_defaults": em.defaults, "files": list(GENERATED_FILES),
    }
    manifest_path = run_dir / EXPORT_DIR / MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportResult(run_dir=run_dir, board=b.id, signature=sig, files=written,
                        manifest_path=manifest_path, memory=plan.to_dict(), manifest=manifest)


def remove_generated(root: Path | None = None) -> None:
    """Back to a firmware without a model (the runtime then reports NO_MODEL)."""
    folder = generated_dir(root)
    for fname in GENERATED_FILES:
        p = folder / fname
        if p.exists():
            p.unlink()


__all__ = ["ExportError", "ExportResult", "export_run", "export_model", "load_export_model",
           "read_signature", "remove_generated", "quantize_multiplier", "signature"]
