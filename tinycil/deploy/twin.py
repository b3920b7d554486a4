"""The host twin: the firmware's own runtime and kernels, built for the host and driven by ctypes.

The same C++ (firmware/lib/runtime, firmware/lib/kernels) and the run's exported model
(RUN/export/model_data.*) are compiled with the host g++ into a shared library, with the float
rules of the firmware build (-ffp-contract=off; multiply-adds only as explicit fmaf), so the twin
computes what the device computes, bit for bit. `Twin` exposes the runtime's C API.

The library is cached in RUN/export/twin/ under a hash of its sources and flags.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tinycil.protocol_spec import STATUS

CXXFLAGS = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-exceptions", "-fno-rtti", "-fPIC",
            "-shared", "-Wall"]
STATUS_NAMES = {v: k for k, v in STATUS.items()}


class TwinError(RuntimeError):
    """The twin could not be built, or a runtime call returned an error status."""


class RtDesc(ctypes.Structure):
    _fields_ = [("signature", ctypes.c_uint8 * 8), ("has_model", ctypes.c_uint8),
                ("input_type", ctypes.c_uint8), ("input_rank", ctypes.c_uint8),
                ("buffer_store", ctypes.c_uint8), ("input_shape", ctypes.c_uint16 * 4),
                ("input_scale", ctypes.c_float), ("input_zero_point", ctypes.c_int32),
                ("input_size", ctypes.c_uint32), ("classes_max", ctypes.c_uint16),
                ("classes_seen", ctypes.c_uint16), ("buffer_capacity", ctypes.c_uint32),
                ("buffer_fill", ctypes.c_uint32), ("arena_bytes", ctypes.c_uint32),
                ("arena_used", ctypes.c_uint32), ("task", ctypes.c_uint16),
                ("max_batch", ctypes.c_uint16)]


class TrainParams(ctypes.Structure):
    _fields_ = [("lr", ctypes.c_float), ("momentum", ctypes.c_float), ("clip_norm", ctypes.c_float),
                ("batch_new", ctypes.c_uint16), ("batch_replay", ctypes.c_uint16),
                ("seed", ctypes.c_uint32), ("balance_lr_scale", ctypes.c_float),
                ("balance_steps", ctypes.c_uint16), ("asymmetric_ce", ctypes.c_uint8),
                ("replay_shift", ctypes.c_uint8), ("head_weight", ctypes.c_float),
                ("head_shrinkage", ctypes.c_float)]


class StepReport(ctypes.Structure):
    _fields_ = [("loss", ctypes.c_float), ("grad_norm", ctypes.c_float), ("batch", ctypes.c_uint16),
                ("pending", ctypes.c_uint16), ("stepped", ctypes.c_uint8),
                ("reserved", ctypes.c_uint8 * 3)]


class RtStats(ctypes.Structure):
    _fields_ = [("steps", ctypes.c_uint32), ("samples_trained", ctypes.c_uint32),
                ("last_step_ticks", ctypes.c_uint64), ("arena_high_water", ctypes.c_uint32),
                ("buffer_fill", ctypes.c_uint32)]


def _struct_dict(s) -> dict:
    out = {}
    for name, _ in s._fields_:
        v = getattr(s, name)
        out[name] = list(v) if isinstance(v, ctypes.Array) else v
    return out


def firmware_dir(root: Path | None = None) -> Path:
    from tinycil.deploy.boards import project_root

    return (root or project_root()) / "firmware"


def build_library(model_dir: Path, out_dir: Path, root: Path | None = None) -> Path:
    """Compile runtime + kernels + the model in `model_dir` into a shared library (cached)."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise TwinError(f"no host C++ compiler ({cxx}): install g++ (Debian: apt-get install g++)")
    fw = firmware_dir(root)
    lib = fw / "lib"
    sources = sorted((lib / "runtime").glob("*.cpp")) + sorted((lib / "kernels").glob("*.cpp"))
    headers = sorted((lib / "runtime").glob("*.h")) + sorted((lib / "kernels").glob("*.h"))
    model_files = [model_dir / "model_data.h", model_dir / "model_data.cpp"]
    for f in model_files:
        if not f.is_file():
            raise TwinError(f"{f} is missing: export the run first (`tinycil export RUN --board B`)")
    h = hashlib.sha256(" ".join(CXXFLAGS).encode())
    for f in sources + headers + model_files + [lib / "protocol" / "tc_protocol_spec.h"]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"libtinycil_twin_{h.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    includes = [f"-I{p}" for p in (model_dir, lib / "runtime", lib / "kernels", lib / "protocol")]
    tmp = target.with_suffix(".tmp.so")
    cmd = [cxx, *CXXFLAGS, *includes, *map(str, sources), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise TwinError("building the host twin failed:\n" + proc.stderr[-4000:])
    tmp.replace(target)
    for old in out_dir.glob("libtinycil_twin_*.so"):  # keep only the current build
        if old != target:
            old.unlink(missing_ok=True)
    return target


class Twin:
    """The device runtime on the host. `Twin(run_dir)` builds (or reuses) the library for the
    run's export (RUN/export/) and initialises the runtime like a device at boot."""

    def __init__(self, run_dir=None, *, model_dir=None, root: Path | None = None):
        if model_dir is None:
            if run_dir is None:
                raise TwinError("Twin needs a run folder (or model_dir with model_data.*)")
            model_dir = Path(run_dir) / "export"
        model_dir = Path(model_dir)
        self.library_path = build_library(model_dir, model_dir / "twin", root)
        # Each Twin loads its own copy of the library: the runtime's state is static, and two
        # twins loaded from one file would share it (the loader hands out the same instance).
        fd, copy = tempfile.mkstemp(suffix=".so", prefix="tinycil_twin_")
        os.close(fd)
        shutil.copyfile(self.library_path, copy)
        try:
            self._lib = ctypes.CDLL(copy, mode=ctypes.RTLD_LOCAL)
        finally:
            os.unlink(copy)  # the mapping stays valid; nothing is left behind
        self._bind()
        self._check(self._lib.tc_rt_init(), "init")
        self.desc = self.describe()
        self.input_shape = tuple(self.desc["input_shape"][: self.desc["input_rank"]])
        self.input_size = int(self.desc["input_size"])

    def _bind(self):
        L = self._lib
        P = ctypes.POINTER
        L.tc_rt_init.restype = ctypes.c_int
        L.tc_rt_describe.argtypes = [P(RtDesc)]
        L.tc_rt_set_training.argtypes = [P(TrainParams)]
        L.tc_rt_begin_task.argtypes = [P(ctypes.c_uint8), ctypes.c_uint16]
        L.tc_rt_train_samples.argtypes = [P(ctypes.c_int8), P(ctypes.c_uint8), ctypes.c_uint16,
                                          ctypes.c_uint8, P(StepReport)]
        L.tc_rt_add_buffer_samples.argtypes = [P(ctypes.c_int8), P(ctypes.c_uint8), ctypes.c_uint16]
        L.tc_rt_end_task.argtypes = [P(StepReport)]
        L.tc_rt_observe_samples.argtypes = [P(ctypes.c_int8), P(ctypes.c_uint8), ctypes.c_uint16]
        L.tc_rt_fit_head.argtypes = []
        L.tc_rt_head_params.argtypes = [P(ctypes.c_float), P(ctypes.c_float), P(ctypes.c_uint16),
                                        P(ctypes.c_uint16)]
        L.tc_rt_head_params.restype = ctypes.c_int32
        L.tc_rt_predict.argtypes = [P(ctypes.c_int8), ctypes.c_uint16, P(ctypes.c_uint8)]
        L.tc_rt_stats.argtypes = [P(RtStats)]
        L.tc_rt_tail_params.argtypes = [ctypes.c_uint16, P(ctypes.c_float), P(ctypes.c_float),
                                        P(ctypes.c_uint16), P(ctypes.c_uint16)]
        L.tc_rt_tail_params.restype = ctypes.c_int32
        L.tc_rt_tail_grads.argtypes = [ctypes.c_uint16, P(ctypes.c_float), P(ctypes.c_float)]
        L.tc_rt_tail_grads.restype = ctypes.c_int32
        L.tc_rt_backbone.argtypes = [P(ctypes.c_int8), P(ctypes.c_int8)]
        L.tc_rt_backbone.restype = ctypes.c_int32
        L.tc_rt_logits.argtypes = [P(ctypes.c_int8), P(ctypes.c_float)]
        L.tc_rt_logits.restype = ctypes.c_int32

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != STATUS["OK"]:
            raise TwinError(f"{what}: runtime status {STATUS_NAMES.get(status, status)}")

    def _samples(self, x) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x))
        if x.dtype != np.int8:
            raise TwinError(f"the runtime takes int8 samples, got {x.dtype}")
        x = x.reshape(-1, self.input_size) if x.size else x.reshape(0, self.input_size)
        return x

    @staticmethod
    def _ptr(a: np.ndarray, ctype):
        return a.ctypes.data_as(ctypes.POINTER(ctype))

    # the C API ----------------------------------------------------------------------------------
    def describe(self) -> dict:
        d = RtDesc()
        self._lib.tc_rt_describe(ctypes.byref(d))
        out = _struct_dict(d)
        out["signature"] = bytes(out["signature"])
        return out

    def set_training(self, lr: float, momentum: float, batch_new: int, batch_replay: int,
                     clip_norm: float, seed: int, *, asymmetric_ce: bool = False,
                     balance_steps: int = 0, balance_lr_scale: float = 0.1,
                     replay_shift: int = 0, discriminant_weight: float = 0.0,
                     discriminant_shrinkage: float = 0.1) -> None:
        p = TrainParams(lr, momentum, clip_norm, batch_new, batch_replay, seed, balance_lr_scale,
                        balance_steps, int(bool(asymmetric_ce)), int(replay_shift),
                        discriminant_weight, discriminant_shrinkage)
        self._check(self._lib.tc_rt_set_training(ctypes.byref(p)), "set_training")

    def begin_task(self, labels) -> None:
        lab = np.ascontiguousarray(np.asarray(labels, np.uint8))
        self._check(self._lib.tc_rt_begin_task(self._ptr(lab, ctypes.c_uint8), len(lab)),
                    "begin_task")

    def train_samples(self, x, y, end_of_batch: bool = True) -> dict:
        x = self._samples(x)
        y = np.ascontiguousarray(np.asarray(y, np.uint8))
        rep = StepReport()
        self._check(self._lib.tc_rt_train_samples(self._ptr(x, ctypes.c_int8),
                                                  self._ptr(y, ctypes.c_uint8), len(y),
                                                  int(bool(end_of_batch)), ctypes.byref(rep)),
                    "train_samples")
        return _struct_dict(rep)

    def add_buffer_samples(self, x, y) -> None:
        x = self._samples(x)
        y = np.ascontiguousarray(np.asarray(y, np.uint8))
        self._check(self._lib.tc_rt_add_buffer_samples(self._ptr(x, ctypes.c_int8),
                                                       self._ptr(y, ctypes.c_uint8), len(y)),
                    "add_buffer_samples")

    def end_task(self) -> dict:
        """The end-of-task pass (tc_rt_end_task); returns its last step's report."""
        rep = StepReport()
        self._check(self._lib.tc_rt_end_task(ctypes.byref(rep)), "end_task")
        return _struct_dict(rep)

    def observe_samples(self, x, y) -> None:
        """The discriminant head's statistics over labelled samples (tc_rt_observe_samples)."""
        x = self._samples(x)
        y = np.ascontiguousarray(np.asarray(y, np.uint8))
        for start in range(0, len(y), 65535):
            part = np.ascontiguousarray(x[start:start + 65535])
            self._check(self._lib.tc_rt_observe_samples(
                self._ptr(part, ctypes.c_int8), self._ptr(y[start:], ctypes.c_uint8),
                len(part)), "observe_samples")

    def fit_head(self) -> None:
        self._check(self._lib.tc_rt_fit_head(), "fit_head")

    def head_params(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted head's (weights [classes, features], bias [classes]); empty when none."""
        c, d = ctypes.c_uint16(), ctypes.c_uint16()
        self._lib.tc_rt_head_params(None, None, ctypes.byref(c), ctypes.byref(d))
        w = np.zeros((c.value, d.value), np.float32)
        b = np.zeros(c.value, np.float32)
        self._lib.tc_rt_head_params(self._ptr(w, ctypes.c_float), self._ptr(b, ctypes.c_float),
                                    None, None)
        return w, b

    def predict(self, x) -> np.ndarray:
        x = self._samples(x)
        out = np.zeros(len(x), np.uint8)
        for start in range(0, len(x), 65535):
            part = np.ascontiguousarray(x[start:start + 65535])
            self._check(self._lib.tc_rt_predict(self._ptr(part, ctypes.c_int8), len(part),
                                                self._ptr(out[start:], ctypes.c_uint8)), "predict")
        return out

    def stats(self) -> dict:
        s = RtStats()
        self._lib.tc_rt_stats(ctypes.byref(s))
        return _struct_dict(s)

    # inspection ----------------------------------------------------------------------------------
    def _layer_sizes(self, layer: int):
        """(weights, out channels, in channels) of a tail layer, or None past the last."""
        o, i = ctypes.c_uint16(), ctypes.c_uint16()
        n = self._lib.tc_rt_tail_params(layer, None, None, ctypes.byref(o), ctypes.byref(i))
        return None if n < 0 else (n, o.value, i.value)

    @staticmethod
    def _shaped(w: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
        # A dense layer over a vector as [out][in]; any other layer flat, in tc_model.h's layout.
        return w.reshape(n_out, n_in) if w.size == n_out * n_in and w.size else w

    def tail_params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weights, bias) of every tail layer at the current size: a dense layer over a vector
        as [out][in], any other layer flat in tc_model.h's layout (empty for pooling)."""
        out = []
        layer = 0
        while (sizes := self._layer_sizes(layer)) is not None:
            n, o, i = sizes
            w = np.zeros(max(n, 1), np.float32)
            b = np.zeros(max(o, 1), np.float32)
            self._lib.tc_rt_tail_params(layer, self._ptr(w, ctypes.c_float),
                                        self._ptr(b, ctypes.c_float), None, None)
            out.append((self._shaped(w[:n], o, i), b[:o] if n else b[:0]))
            layer += 1
        return out

    def tail_grads(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The gradient of the last SGD step's batch (before clipping: the update folds the
        clipping factor in), laid out as tail_params. After a step at batch 1 a dense layer's
        weight gradient was never formed (the update computes the outer product in registers)."""
        out = []
        layer = 0
        while (sizes := self._layer_sizes(layer)) is not None:
            n, o, i = sizes
            gw = np.zeros(max(n, 1), np.float32)
            gb = np.zeros(max(o, 1), np.float32)
            if self._lib.tc_rt_tail_grads(layer, self._ptr(gw, ctypes.c_float),
                                          self._ptr(gb, ctypes.c_float)) < 0:
                raise TwinError(f"tail layer {layer}: the last step ran at batch 1, where a dense "
                                "layer's weight gradient is applied without being stored")
            out.append((self._shaped(gw[:n], o, i), gb[:o] if n else gb[:0]))
            layer += 1
        return out

    def backbone(self, x) -> np.ndarray:
        x = self._samples(x)
        first = None
        rows = []
        for xi in x:
            xi = np.ascontiguousarray(xi)
            buf = np.zeros(1 << 16, np.int8) if first is None else np.zeros(first, np.int8)
            n = self._lib.tc_rt_backbone(self._ptr(xi, ctypes.c_int8), self._ptr(buf, ctypes.c_int8))
            if n < 0:
                raise TwinError("the backbone could not run (an operator without an int8 kernel)")
            first = n
            rows.append(buf[:n].copy())
        return np.stack(rows) if rows else np.zeros((0, 0), np.int8)

    def logits(self, x) -> np.ndarray:
        x = self._samples(x)
        rows = []
        for xi in x:
            xi = np.ascontiguousarray(xi)
            buf = np.zeros(256, np.float32)
            n = self._lib.tc_rt_logits(self._ptr(xi, ctypes.c_int8), self._ptr(buf, ctypes.c_float))
            if n < 0:
                raise TwinError("logits: the runtime could not run the model")
            rows.append(buf[:n].copy())
        return np.stack(rows)


def run_device_procedure(twin: Twin, inputs, epochs: int | None = None, last_task: int | None = None,
                         on_task=None) -> list[list[float | None]]:
    """The device procedure driven through the twin, as the bridge drives a device.

    `inputs` is a tinycil.learn.simulate.RunInputs of the run. Rows of the known tasks are left None
    (the host evaluates the deployed model for them); from the first field task on, each row is
    the twin's accuracy on the test data of every task so far. `on_task(t, twin)` is called after
    each field task.
    """
    from tinycil.learn.simulate import stream_order
    from tinycil.learn.train import device_ingredients

    cfg, plan, tasks = inputs.config, inputs.plan, inputs.tasks
    tr = cfg["training"]
    epochs = int(tr["epochs"]) if epochs is None else int(epochs)
    order = plan[-1]["seen_classes"]
    unit_of = {int(c): k for k, c in enumerate(order)}

    def units(y):
        return np.array([unit_of[int(c)] for c in y], dtype=np.int64)

    twin.set_training(float(tr["lr"]), float(tr["momentum"]), int(tr["batch_new"]),
                      int(tr["batch_replay"]), float(tr["clip_norm"]), int(inputs.seed),
                      **device_ingredients(tr))
    T = len(tasks) if last_task is None else last_task + 1
    R: list[list[float | None]] = [[None] * len(tasks) for _ in range(len(tasks))]
    bn = int(tr["batch_new"])
    for t in range(inputs.known, T):
        twin.begin_task([unit_of[int(c)] for c in tasks[t]])
        x8, _, y = inputs.train[t]
        yu = units(y)
        for epoch in range(epochs):
            perm = stream_order(len(yu), inputs.seed, t, epoch)
            for start in range(0, len(yu) - bn + 1, bn):
                idx = perm[start:start + bn]
                twin.train_samples(x8[idx], yu[idx], end_of_batch=True)
        bx, _, by = inputs.buffers[t]
        twin.add_buffer_samples(bx, units(by))
        twin.end_task()
        if device_ingredients(tr)["discriminant_weight"] > 0:
            # the head's statistics: the task's samples once more, in the data set's order
            twin.observe_samples(x8, yu)
            twin.fit_head()
        for j in range(t + 1):
            tx, _, ty = inputs.test[j]
            R[t][j] = float(np.mean(twin.predict(tx) == units(ty)))
        if on_task is not None:
            on_task(t, twin)
    return R
