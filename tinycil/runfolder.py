"""The run folder: the one place that knows the names of the files a run writes and reads.

    <run>/config.json        every setting needed to reproduce the run
    <run>/plan.json          growth plan: per task the classes seen and the widths
    <run>/model.keras        trained model after the known tasks
    <run>/buffer/task_<i>.npz  distilled samples of task i: x (float32), y, y_soft?, x_int8?
    <run>/results.json       the results contract (DESIGN.md, "Contracts")
    <run>/summary.md, <run>/plot.png
    <run>/export/manifest.json  what the last export wrote (written by tinycil.deploy.export)
"""

from __future__ import annotations

import json
import math
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


class RunFolderError(FileNotFoundError):
    """A run folder, or a file it should hold, is missing."""


def default_run_dir(dataset: str, kind: str) -> Path:
    """runs/<dataset>-<kind>, e.g. runs/digits-experiment."""
    return Path("runs") / f"{dataset}-{kind}"


def read_signature(run_dir) -> bytes | None:
    """The signature the run's last export recorded (None when it was never exported)."""
    path = Path(run_dir) / EXPORT_DIR / MANIFEST
    if not path.is_file():
        return None
    return bytes.fromhex(json.loads(path.read_text())["signature"])


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
        return _write_json(self.results_path, results)

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
        return keras.models.load_model(self.model_path, compile=False)

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
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    def buffer_tasks(self) -> list[int]:
        folder = self.path / BUFFER_DIR
        if not folder.is_dir():
            return []
        return sorted(int(p.stem.split("_", 1)[1]) for p in folder.glob("task_*.npz"))


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return path


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise RunFolderError(f"{path} is missing: this folder holds no {what} "
                             f"(was the run finished? re-run `tinycil experiment` or `tinycil prepare`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}); re-create the run") from None


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
