"""The run folder: the one place that knows the names of the files a run writes and reads.

    <run>/config.json        every setting needed to reproduce the run
    <run>/plan.json          growth plan: per task the classes seen and the widths
    <run>/model.keras        trained model after the known tasks
    <run>/buffer/task_<i>.npz  distilled samples of task i: x (float32), y, y_soft?, x_int8?
    <run>/results.json       the results contract (DESIGN.md, "Contracts")
    <run>/accuracy_matrix.csv, <run>/metrics.csv  every RESULT of results.json, for spreadsheets
    <run>/summary.md, <run>/plot.png
    <run>/export/manifest.json  what the last export wrote (written by tinycil.deploy.export)
    <run>/device_key         the run's device key (hex): the device learns only from its owner
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

CONFIG = "config.json"
PLAN = "plan.json"
MODEL = "model.keras"
BUFFER_DIR = "buffer"
RESULTS = "results.json"
SUMMARY = "summary.md"
PLOT = "plot.png"
EXPORT_DIR = "export"
MANIFEST = "manifest.json"
DEVICE_KEY = "device_key"
MATRIX_CSV = "accuracy_matrix.csv"
METRICS_CSV = "metrics.csv"
# metrics.csv's columns after "run": the RESULT's scalars (DESIGN.md, "Contracts").
METRIC_COLUMNS = ("final_avg_accuracy", "bwt", "forgetting", "train_flops", "buffer_samples",
                  "buffer_bytes", "buffer_fraction", "instructions_per_train_sample", "ram_bytes",
                  "flash_bytes")


class RunFolderError(FileNotFoundError):
    """A run folder, or a file it should hold, is missing."""


def default_run_dir(dataset: str, kind: str) -> Path:
    """runs/<dataset>-<kind>, e.g. runs/digits-experiment."""
    return Path("runs") / f"{dataset}-{kind}"


def read_device_key(run_dir) -> bytes | None:
    """The run's device key (protocol_spec.DEVICE_KEY_BYTES bytes), None when the run was never
    exported. Export creates it once and keeps it, so every export of the run opens the same
    device; a stream presents it (UNLOCK) before it teaches the device."""
    from tinycil import protocol_spec

    path = Path(run_dir) / DEVICE_KEY
    if not path.is_file():
        return None
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        key = b""
    if len(key) != protocol_spec.DEVICE_KEY_BYTES:
        raise RunFolderError(f"{path} is damaged (not a {protocol_spec.DEVICE_KEY_BYTES}-byte hex "
                             "key): delete it, export the run again and flash it "
                             f"(`tinycil flash --board B --run {run_dir}`)")
    return key


def ensure_device_key(run_dir) -> bytes:
    """The run's device key, created (random, readable by its owner only) on first use."""
    import os
    import secrets

    from tinycil import protocol_spec

    key = read_device_key(run_dir)
    if key is not None:
        return key
    key = secrets.token_bytes(protocol_spec.DEVICE_KEY_BYTES)
    path = Path(run_dir) / DEVICE_KEY
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def read_signature(run_dir) -> bytes | None:
    """The signature the run's last export recorded (None when it was never exported)."""
    path = Path(run_dir) / EXPORT_DIR / MANIFEST
    if not path.is_file():
        return None
    manifest = _read_json(path, "export manifest", advice="export the run again (`tinycil export "
                          f"{run_dir} --board B` or `tinycil flash --board B --run {run_dir}`)")
    try:
        signature = bytes.fromhex(manifest["signature"])
    except (TypeError, KeyError, ValueError):
        signature = b""
    if len(signature) != 8:
        raise RunFolderError(f"{path} holds no valid model signature: export the run again "
                             f"(`tinycil flash --board B --run {run_dir}`)")
    return signature


class RunFolder:
    def __init__(self, path, create: bool = False):
        self.path = Path(path)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_dir():
            raise RunFolderError(f"no run folder at {self.path}; create one with `tinycil experiment` "
                                 f"or `tinycil prepare` (-o {self.path})")

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def plan_path(self) -> Path:
        return self.path / PLAN

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def matrix_csv_path(self) -> Path:
        return self.path / MATRIX_CSV

    @property
    def metrics_csv_path(self) -> Path:
        return self.path / METRICS_CSV

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def plot_path(self) -> Path:
        return self.path / PLOT

    def buffer_path(self, task: int) -> Path:
        return self.path / BUFFER_DIR / f"task_{int(task)}.npz"

    # JSON documents
    def write_config(self, config: dict) -> Path:
        return _write_json(self.config_path, config)

    def read_config(self) -> dict:
        return _read_json(self.config_path, "config")

    def write_plan(self, plan) -> Path:
        return _write_json(self.plan_path, plan)

    def read_plan(self):
        return _read_json(self.plan_path, "growth plan")

    def write_results(self, results: dict) -> Path:
        """results.json, and beside it the same RESULTs as accuracy_matrix.csv and metrics.csv."""
        path = _write_json(self.results_path, results)
        write_results_csv(self.path, results)
        return path

    def read_results(self) -> dict:
        return _read_json(self.results_path, "results")

    # model and buffers
    def save_model(self, model) -> Path:
        model.save(self.model_path)
        return self.model_path

    def load_model(self):
        import keras

        if not self.model_path.is_file():
            raise RunFolderError(f"{self.model_path} is missing; run `tinycil prepare` for this run folder")
        try:
            return keras.models.load_model(self.model_path, compile=False)
        except Exception as exc:  # Keras reports a damaged file as any of several errors
            raise RunFolderError(f"{self.model_path} is damaged ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); prepare the run "
                                 f"again (`tinycil prepare ... -o {self.path}`)") from None

    def save_buffer(self, task: int, x: np.ndarray, y: np.ndarray, y_soft: np.ndarray | None = None,
                    x_int8: np.ndarray | None = None) -> Path:
        path = self.buffer_path(task)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"x": np.asarray(x, np.float32), "y": np.asarray(y, np.int64)}
        if y_soft is not None:
            arrays["y_soft"] = np.asarray(y_soft, np.float32)
        if x_int8 is not None:
            arrays["x_int8"] = np.asarray(x_int8, np.int8)
        np.savez(path, **arrays)
        return path

    def load_buffer(self, task: int) -> dict[str, np.ndarray]:
        path = self.buffer_path(task)
        if not path.is_file():
            raise RunFolderError(f"{path} is missing; the run folder holds no buffer for task {task}")
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise RunFolderError(f"{path} is damaged ({type(exc).__name__}: {exc}); prepare the "
                                 f"run again (`tinycil prepare ... -o {self.path}`)") from None
        for key in ("x", "y"):
            if key not in arrays:
                raise RunFolderError(f"{path} holds no {key!r} array; prepare the run again "
                                     f"(`tinycil prepare ... -o {self.path}`)")
        if len(arrays["x"]) != len(arrays["y"]):
            raise RunFolderError(f"{path} holds {len(arrays['x'])} samples but {len(arrays['y'])} "
                                 f"labels; prepare the run again (`tinycil prepare ... -o "
                                 f"{self.path}`)")
        return arrays

    def buffer_tasks(self) -> list[int]:
        folder = self.path / BUFFER_DIR
        if not folder.is_dir():
            return []
        return sorted(int(p.stem.split("_", 1)[1]) for p in folder.glob("task_*.npz"))


def result_records(results: dict) -> list[tuple[str, dict]]:
    """(name, RESULT) of every RESULT in results.json: "method", each baseline by its name,
    "device", the host "twin", and earlier device sessions as "device_session_<id>"."""
    out = []
    if isinstance(results.get("method"), dict):
        out.append(("method", results["method"]))
    out += [(k, v) for k, v in (results.get("baselines") or {}).items() if isinstance(v, dict)]
    for key in ("device", "twin"):
        if isinstance(results.get(key), dict):
            out.append((key, results[key]))
    for old in results.get("device_history") or []:
        if isinstance(old, dict) and isinstance(old.get("device"), dict):
            sid = (old.get("session") or {}).get("session_id")
            out.append((f"device_session_{sid:08x}" if isinstance(sid, int) else
                        "device_session_unknown", old["device"]))
    return [(n, r) for n, r in out if isinstance(r.get("accuracy_matrix"), list)]


def write_results_csv(folder, results: dict) -> tuple[Path, Path]:
    """accuracy_matrix.csv (one line per RESULT and row i: run, after_task, task_0..task_T-1;
    empty where j > i) and metrics.csv (one line per RESULT), written whole or not at all."""
    import csv
    import io

    records = result_records(results)
    width = max((len(r["accuracy_matrix"]) for _, r in records), default=0)
    matrix = io.StringIO()
    w = csv.writer(matrix, lineterminator="\n")
    w.writerow(["run", "after_task"] + [f"task_{j}" for j in range(width)])
    for name, r in records:
        for i, row in enumerate(r["accuracy_matrix"]):
            w.writerow([name, i] + ["" if a is None else a for a in row])
    metrics = io.StringIO()
    w = csv.writer(metrics, lineterminator="\n")
    w.writerow(("run",) + METRIC_COLUMNS)
    for name, r in records:
        buf = r.get("buffer") or {}
        values = {**r, "buffer_samples": buf.get("samples"), "buffer_bytes": buf.get("bytes"),
                  "buffer_fraction": buf.get("fraction")}
        w.writerow([name] + ["" if values.get(c) is None else jsonable(values[c])
                             for c in METRIC_COLUMNS])
    folder = Path(folder)
    return (_write_text(folder / MATRIX_CSV, matrix.getvalue()),
            _write_text(folder / METRICS_CSV, metrics.getvalue()))


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a reader never sees half a file
    return path


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return path


def _read_json(path: Path, what: str, advice: str = "re-create the run (`tinycil prepare` or "
               "`tinycil experiment`)"):
    if not path.is_file():
        raise RunFolderError(f"{path} is missing: this folder holds no {what} "
                             f"(was the run finished? re-run `tinycil experiment` or `tinycil prepare`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}); {advice}") from None
    except OSError as exc:
        raise RunFolderError(f"{path} cannot be read ({exc.strerror}); {advice}") from None
    if not isinstance(data, (dict, list)):
        raise RunFolderError(f"{path} holds no {what} (a JSON {type(data).__name__}); {advice}")
    return data


def jsonable(obj):
    """numpy scalars/arrays to Python; NaN/inf to null (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
