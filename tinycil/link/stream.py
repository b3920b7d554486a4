"""Teaching a device one task over the serial link: `tinycil stream`.

The device procedure (see tinycil.learn.simulate) seen from the host: check that the device runs the
run's model, send the training parameters, BEGIN_TASK, stream the task's int8 training samples
epoch by epoch in the order the host shuffles (numpy default_rng(seed + 1000 * task + epoch),
full mini-batches of batch_new only, as the simulation does), add the task's host-distilled
samples to the replay buffer, evaluate on the test data of every task so far, and append that row
of the accuracy matrix to the run's results.json under "device".

The device's identity comes from HELLO (INFO): its model signature, input shape and the classes
it has seen, which also tell, after a reset, which task a firmware built with persistence restored
from flash. The last BUFFER_SAMPLES frame of a task says END_OF_TASK: such a firmware saves its
learned state then, and the host waits for that answer.

The record cannot lie. Every file of the run folder is checked before the device is touched. A
device learning session is one flash of the run's signature and one boot of the device (INFO's
session id); results.json keeps the record of the device's current session ("device_log" and the
"device" RESULT) and moves an earlier session's record whole to "device_history". A task enters
the record only when the device confirmed all of it: every training sample (STATS), every buffer
sample (the buffer's fill) and the end of the task. The class count alone never makes a task
complete: a device that grew for a task it did not finish (Ctrl-C, a lost link) is refused, with
the ways on that work (restart to the state it saved last, or flash again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tinycil import protocol_spec as spec
from tinycil.link.bridge import DeviceError
from tinycil.link.packing import FramePlan
from tinycil.learn.train import device_ingredients
from tinycil.runfolder import read_device_key
from tinycil.link.session import (DeviceReset, Session, begin_task_payload, parse_eval_result,
                             parse_stats, samples_payload, train_control_payload,
                             device_training_control)

FLAGS = spec.SAMPLES_FLAGS
PERSIST_NAMES = {v: k for k, v in spec.PERSIST_STATES.items()}


class StreamError(DeviceError):
    """A run and a device that do not go together; the message says how to fix it."""


class TaskInterrupted(StreamError):
    """Ctrl-C during a task; the message says what the device holds now and how to go on."""

    interrupted = True


def _bar(total: int, desc: str, unit: str, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


@dataclass
class RunData:
    """What a device run streams, read from its run folder: int8 samples and output units."""

    run_dir: object
    config: dict
    plan: list
    tasks: list
    known: int
    seed: int
    unit_of: dict
    signature: bytes | None
    input_size: int

    @classmethod
    def load(cls, run_dir) -> "RunData":
        """Read and check the run folder's files (config, plan, export manifest and the buffer of
        every device task) before anything is sent to a device: a damaged file is refused here,
        not half-way through a task."""
        from tinycil.runfolder import RunFolder, read_signature

        run = RunFolder(run_dir)
        cfg = run.read_config()
        plan = run.read_plan()
        again = f"prepare the run again (`tinycil prepare ... -o {run_dir}`)"
        needed = ("input_quantization", "task_classes", "input_shape", "known_tasks", "seed",
                  "training", "dataset")
        if not isinstance(cfg, dict) or any(k not in cfg for k in needed):
            raise StreamError(f"{run.config_path} was not written by `tinycil prepare`: {again}")
        try:
            tasks = [list(map(int, t)) for t in cfg["task_classes"]]
            known = int(cfg["known_tasks"])
            size = int(np.prod(cfg["input_shape"]))
            q = cfg["input_quantization"]
            float(q["scale"]), int(q["zero_point"])
            tr = cfg["training"]
            for key in ("epochs", "lr", "momentum", "clip_norm", "batch_new", "batch_replay"):
                float(tr[key])
            if not isinstance(plan, list) or len(plan) != len(tasks):
                raise ValueError("the growth plan has no entry per task")
            unit_of = {int(c): k for k, c in enumerate(plan[-1]["seen_classes"])}
            for t, entry in enumerate(plan):
                int(entry["classes_seen"])
        except (TypeError, KeyError, ValueError, IndexError) as exc:
            raise StreamError(f"{run.path}'s config.json or plan.json is damaged "
                              f"({type(exc).__name__}: {exc}): {again}") from None
        if not 1 <= known < len(tasks) or any(c not in unit_of for t in tasks for c in t):
            raise StreamError(f"{run.config_path} does not describe a device run (known tasks "
                              f"{known} of {len(tasks)}): {again}")
        data = cls(run_dir, cfg, plan, tasks, known, int(cfg["seed"]), unit_of,
                   read_signature(run_dir), size)
        data._ds = None
        data._buffers = {t: data._check_buffer(run, t) for t in range(known, len(tasks))}
        return data

    def _check_buffer(self, run, task: int) -> tuple[np.ndarray, np.ndarray]:
        buf = run.load_buffer(task)
        where = f"{run.buffer_path(task)}"
        if "x_int8" not in buf:
            raise StreamError(f"{where} holds no int8 samples: prepare the run again")
        x = np.asarray(buf["x_int8"])
        y = np.asarray(buf["y"])
        if x.dtype != np.int8 or len(x) != len(y) or (len(x) and x[0].size != self.input_size):
            raise StreamError(f"{where} holds samples that do not match the model's input "
                              f"({self.input_size} int8 values each): prepare the run again")
        classes = set(self.tasks[task])
        units = {self.unit_of[c] for c in classes}
        labels = set(int(v) for v in np.unique(y))
        if labels <= classes:
            units_y = self.units(y)
        elif labels <= units:
            units_y = y.astype(np.uint8)
        else:
            raise StreamError(f"{where} has labels {sorted(labels)}, not the classes of task "
                              f"{task} {sorted(classes)}: prepare the run again")
        return x.reshape(len(y), -1), units_y

    def units(self, y) -> np.ndarray:
        return np.array([self.unit_of[int(c)] for c in y], dtype=np.uint8)

    def buffer_units(self, task: int) -> np.ndarray:
        """The output units of any task's buffer samples (a known task's are in the firmware)."""
        if task in self._buffers:
            return self._buffers[task][1]
        from tinycil.runfolder import RunFolder

        return self.units(RunFolder(self.run_dir).load_buffer(task)["y"])

    def dataset(self):
        if self._ds is None:
            from tinycil.datasets import load_dataset

            cfg = self.config
            self._ds = load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir"),
                                    resize=tuple(cfg["resize"]) if cfg.get("resize") else None,
                                    seed=self.seed, max_train=cfg.get("max_train"),
                                    max_test=cfg.get("max_test"))
        return self._ds

    def samples(self, part: str, task: int) -> tuple[np.ndarray, np.ndarray]:
        """(int8 inputs, output units) of a task's train or test data, in the data set's order."""
        from tinycil.learn.quantize import quantize_inputs
        from tinycil.learn.tasks import task_subset

        ds = self.dataset()
        x, y = task_subset(getattr(ds, f"x_{part}"), getattr(ds, f"y_{part}"), self.tasks[task])
        q = self.config["input_quantization"]
        x8 = quantize_inputs(x, float(q["scale"]), int(q["zero_point"]))
        return x8.reshape(len(x8), -1), self.units(y)

    def buffer(self, task: int) -> tuple[np.ndarray, np.ndarray]:
        """(int8 samples, output units) of a device task's distilled buffer (checked at load)."""
        return self._buffers[task]


def _has_signature(sig: str) -> bool:
    return bool(sig) and set(sig) != {"0"}


def tasks_held(data: RunData, info: dict) -> int | None:
    """The last task whose classes the device has seen (from INFO.classes_seen), or None when
    the count matches no task boundary of the run's plan. The count alone does not say the task
    is complete: see `confirmed_task`."""
    seen = int(info.get("classes_seen", 0))
    done = [t for t in range(len(data.tasks)) if int(data.plan[t]["classes_seen"]) == seen]
    return done[-1] if done else None


def _persisted_task(info: dict) -> int | None:
    """The task whose state the device restored at boot or saved since (persistence), else None."""
    if PERSIST_NAMES.get(int(info.get("persist", 0))) in ("RESTORED", "SAVED"):
        return int(info.get("persist_task", -1))
    return None


def confirmed_task(data: RunData, info: dict, log: dict | None) -> int | None:
    """The last task the device is known to hold completely, or None when its state cannot be
    vouched for. It is: the deployed model (the host's tasks), a task this device session
    completed with every sample confirmed (`log`, the run's record of this very session), or a
    state the device saved at the end of a task (persistence saves only at END_OF_TASK, which
    the host sends after every other frame of the task was answered)."""
    held = tasks_held(data, info)
    if held is None:
        return None
    if held < data.known:
        return held
    this_session = (log or {}).get("session", {}).get("session_id") == info.get("session_id")
    if log is not None and this_session and str(held) in log.get("tasks", {}):
        return held
    if _persisted_task(info) == held:
        return held
    return None


def state_after_reset(data: RunData, info: dict) -> int | None:
    """The task whose state the device will hold after a restart: the one it saved last
    (persistence), the deployed model when nothing was saved, None when its last save or load
    failed."""
    persist = PERSIST_NAMES.get(int(info.get("persist", 0)), "OFF")
    if persist in ("RESTORED", "SAVED"):
        return int(info.get("persist_task", 0))
    if persist in ("OFF", "EMPTY"):
        return data.known - 1
    return None


def recovery_advice(data: RunData, info: dict, run_name: str, board_hint: str) -> str:
    """The ways on from a device whose state is not a completed task, each one that works."""
    flash = (f"flash it again (`tinycil flash {board_hint} --run {run_name}`) and stream from "
             f"task {data.known}")
    after = state_after_reset(data, info)
    if after is None or after + 1 >= len(data.tasks):
        return flash[0].upper() + flash[1:] + "."
    saved = ("the state it saved after task" if after >= data.known else
             "its deployed model (the host's tasks, up to task")
    return (f"Restart it from {saved} {after}{')' if after < data.known else ''} and stream task "
            f"{after + 1}: `tinycil stream --run {run_name} {board_hint} --task {after + 1} "
            f"--restart`; or {flash}.")


def check_device(data: RunData, info: dict, task: int, run_name: str, board_hint: str,
                 log: dict | None = None) -> None:
    """Refuse a device (its INFO) that runs another model or is not at the point `task`
    continues from. `log` is the run's record of the device's current session (None: none)."""
    if data.signature is None:
        raise StreamError(f"run {run_name} was never exported: run `tinycil flash {board_hint} "
                          f"--run {run_name}` first")
    want = data.signature.hex()
    got = info.get("model_signature", "")
    if got != want:
        shown = got if _has_signature(got) else "no model"
        raise StreamError(f"device runs model {shown}, run {run_name} exported {want}: run "
                          f"`tinycil flash {board_hint} --run {run_name}`")
    input_size = int(np.prod(info.get("input_shape") or [0]))
    if input_size != data.input_size:
        raise StreamError(f"the device takes samples of {input_size} bytes, the run "
                          f"{data.input_size}: flash the run's export again")
    T = len(data.tasks)
    if not data.known <= task < T:
        raise StreamError(f"task {task} is not a device task of run {run_name}: the device "
                          f"learns tasks {data.known}..{T - 1} (tasks before {data.known} were "
                          "learned on the host)")
    held = tasks_held(data, info)
    confirmed = confirmed_task(data, info, log)
    if confirmed is not None and confirmed == task - 1:
        return
    sid = f"0x{int(info.get('session_id', 0)):08x}"
    if confirmed is not None:
        if confirmed < task - 1:
            raise StreamError(f"the device has learned up to task {confirmed}, task {task} "
                              f"continues from task {task - 1}: stream task {confirmed + 1} next")
        nxt = (f"stream task {confirmed + 1} next" if confirmed + 1 < T else
               "it has learned every task of the run")
        raise StreamError(f"the device has already learned task {confirmed}: {nxt}. To learn "
                          f"task {task} again: {recovery_advice(data, info, run_name, board_hint)}")
    if held is not None:
        interrupted = log is not None and (log.get("in_progress") or {}).get("task") == held
        why = ("was interrupted" if interrupted else
               f"is not recorded as complete in run {run_name} for this device session ({sid})")
        raise StreamError(f"the device began task {held} but its learning of that task {why}: "
                          f"its state is not that of a completed task. "
                          + recovery_advice(data, info, run_name, board_hint))
    seen = int(info.get("classes_seen", 0))
    raise StreamError(f"the device has seen {seen} classes, which matches no task of run "
                      f"{run_name}: " + recovery_advice(data, info, run_name, board_hint))


def reset_advice(data: RunData, info: dict, run_name: str, board_hint: str) -> str:
    """What to do after the device restarted, from its INFO after the restart."""
    held = _persisted_task(info)
    if held is not None and tasks_held(data, info) == held and held + 1 < len(data.tasks):
        return (f"It restored the state it saved after task {held} (save "
                f"#{info.get('persist_sequence')}): stream task {held + 1} again (`tinycil "
                f"stream --run {run_name} {board_hint} --task {held + 1}`).")
    if held is not None and tasks_held(data, info) == held:
        return f"It restored the state it saved after task {held}, the run's last task."
    if state_after_reset(data, info) is None:
        return (f"Its last load or save of the learned state failed, so what it holds is not "
                f"known: flash it again (`tinycil flash {board_hint} --run {run_name}`) and "
                f"stream from task {data.known}.")
    return (f"Everything it learned since it was flashed is gone: it runs its deployed model "
            f"again, so stream again from task {data.known} (`tinycil stream --run {run_name} "
            f"{board_hint} --task {data.known}`), or flash it again (`tinycil flash "
            f"{board_hint} --run {run_name}`).")


def evaluate(session: Session, data: RunData, upto: int, progress: bool) -> tuple[list, dict]:
    """Accuracy on the test data of tasks 0..upto (predictions from the device)."""
    parts = [data.samples("test", j) for j in range(upto + 1)]
    preds = [np.zeros(len(y), np.int64) for _, y in parts]
    bar = _bar(sum(len(y) for _, y in parts), "evaluate", "sample", progress)
    summary: dict = {}
    last_part = max((j for j, (_, y) in enumerate(parts) if len(y)), default=-1)

    first = True
    for j, (x, y) in enumerate(parts):
        plan = FramePlan(x)
        s = 0
        while s < len(y):
            # The session sizes every frame to the link's measured loss.
            n = session.samples_in_frame(plan, np.arange(s, min(len(y), s + spec.EVAL_MAX_SAMPLES)),
                                         spec.EVAL_MAX_SAMPLES)
            flags = (FLAGS["EVAL_START"] if first else 0) | (
                FLAGS["EVAL_SUMMARY"] if j == last_part and s + n >= len(y) else 0)

            def store(reply, j=j, s=s, n=n):
                p, per_class = parse_eval_result(reply)
                preds[j][s:s + n] = p
                if per_class:
                    summary["per_class"] = per_class
                if bar is not None:
                    bar.update(n)

            session.send("EVAL_SAMPLES", samples_payload(x[s:s + n], y[s:s + n], flags,
                                                         plan.fill_or_none), on_reply=store)
            first = False
            s += n
    session.flush()
    if bar is not None:
        bar.close()
    row = [float(np.mean(preds[j] == parts[j][1])) for j in range(upto + 1)]
    # The device's own per-class count must agree with the host's reading of its predictions.
    per_class = summary.get("per_class", [])
    correct = sum(c for c, _ in per_class)
    total = sum(t for _, t in per_class)
    host_correct = int(sum(np.sum(preds[j] == parts[j][1]) for j in range(upto + 1)))
    if per_class and (correct, total) != (host_correct, sum(len(y) for _, y in parts)):
        raise DeviceError(f"the device counted {correct}/{total} correct, its predictions say "
                          f"{host_correct}: the link delivered inconsistent data")
    return row, {"per_class": [list(p) for p in per_class]}


def stream_task(run_dir, link, task: int, *, epochs: int | None = None, lr: float | None = None,
                momentum: float | None = None, batch_new: int | None = None,
                batch_replay: int | None = None, clip_norm: float | None = None,
                progress: bool = True, echo=print, board_hint: str = "--board B",
                timeout: float = 2.0, max_sends: int = 10, data: RunData | None = None,
                restart: bool = False) -> dict:
    """Teach the device behind `link` task `task` of the run; returns what was measured and
    records the accuracy row in the run's results.json ("device", the record of the device's
    current learning session). `restart` first restarts the device so that it falls back to the
    state it saved last (or its deployed model), for a task that was interrupted."""
    run_name = str(run_dir)
    data = data or RunData.load(run_dir)
    tr = training_settings(data, epochs=epochs, lr=lr, momentum=momentum, batch_new=batch_new,
                           batch_replay=batch_replay, clip_norm=clip_norm)
    device_key = read_device_key(run_dir)  # checked before the device is touched
    results = _read_results(run_dir)
    info = link.hello()
    if restart:
        info = restart_device(link, data, info, task, run_name, board_hint, echo)
    log = session_log(results, data, info)
    check_device(data, info, task, run_name, board_hint, log)
    session = Session(link, info, timeout=timeout, max_sends=max_sends)
    session.unlock(device_key, run_name)  # the device learns only from its run's owner
    where = {"begun": False}
    try:
        return _stream_checked(session, data, run_dir, results, task, where, tr=tr,
                               progress=progress, echo=echo, board_hint=board_hint)
    except KeyboardInterrupt:
        if not where["begun"]:
            raise TaskInterrupted(f"interrupted before task {task} began on the device: it still "
                                  f"holds what it held before; stream task {task} again.") from None
        _mark_interrupted(run_dir, results, task)
        raise TaskInterrupted(
            f"interrupted during task {task}: the device began the task but did not complete it, "
            f"so what it holds is not the state after a completed task and nothing of task "
            f"{task} was recorded. " + recovery_advice(data, info, run_name, board_hint)) from None
    except DeviceReset as exc:
        # Ask the restarted device what it holds now: a firmware with persistence restored the
        # state of the last task it completed.
        try:
            after = link.hello()
        except DeviceError:
            raise exc from None
        raise DeviceReset(
            f"the device restarted during task {task} (session 0x{exc.old_session:08x} is now "
            f"0x{exc.new_session:08x}). {reset_advice(data, after, run_name, board_hint)}",
            exc.old_session, exc.new_session) from None


def restart_device(link, data: RunData, info: dict, task: int, run_name: str, board_hint: str,
                   echo=print, wait: float = 20.0) -> dict:
    """Restart the device (RESET) when that brings it to the state `task` continues from;
    returns its INFO after the restart."""
    from tinycil.link.session import reset_device

    after = state_after_reset(data, info)
    flash = f"`tinycil flash {board_hint} --run {run_name}`"
    if after is None:
        raise StreamError(f"the device's last load or save of its learned state failed, so a "
                          f"restart would not bring back a known state: flash it again ({flash})")
    if after != task - 1:
        raise StreamError(f"after a restart the device would hold the state after task {after}, "
                          f"and task {task} continues from task {task - 1}: restart with "
                          f"--task {after + 1}, or flash it again ({flash})")
    echo(f"restarting the device: it falls back to the state after task {after} ...")
    old = int(info["session_id"])
    reset_device(link)
    deadline = time.monotonic() + wait
    while True:
        try:
            info = link.hello()
            if int(info["session_id"]) != old:
                return info
        except DeviceError:
            pass
        if time.monotonic() > deadline:
            raise StreamError(f"the device did not come back within {wait:.0f} s of its restart: "
                              f"check it with `tinycil info {board_hint}`")
        time.sleep(0.2)


def session_identity(data: RunData, info: dict) -> dict:
    """A device learning session: one flash of the run's model signature, one boot of the device
    (INFO.session_id, new at every boot)."""
    return {"signature": data.signature.hex() if data.signature else None,
            "session_id": int(info.get("session_id", 0))}


def session_log(results: dict, data: RunData, info: dict) -> dict | None:
    """The run's record of the device's current session, None when the run has none."""
    log = results.get("device_log")
    if isinstance(log, dict) and log.get("session") == session_identity(data, info):
        return log
    return None


def open_session_log(results: dict, data: RunData, info: dict) -> dict:
    """The record of the device's current session, started when there is none. The record of an
    earlier session (with its "device" RESULT) moves to "device_history": records of different
    sessions are never mixed."""
    log = session_log(results, data, info)
    if log is not None:
        return log
    old = results.pop("device_log", None)
    old_result = results.pop("device", None)
    if old or old_result:
        old = old if isinstance(old, dict) else {}
        results.setdefault("device_history", []).append(
            {"session": old.get("session"), "device_log": old, "device": old_result})
    restored = _persisted_task(info)
    log = {"session": session_identity(data, info), "rows": {}, "tasks": {},
           "started_from_task": confirmed_task(data, info, None),
           "restored": ({"task": restored, "save": info.get("persist_sequence")}
                        if PERSIST_NAMES.get(int(info.get("persist", 0))) == "RESTORED" else None)}
    results["device_log"] = log
    return log


def _mark_interrupted(run_dir, results: dict, task: int) -> None:
    from tinycil.runfolder import RunFolder

    log = results.get("device_log")
    if isinstance(log, dict):
        log["in_progress"] = {"task": task, "interrupted": True}
        RunFolder(run_dir).write_results(results)


def training_settings(data: RunData, **overrides) -> dict:
    """The run's training settings with the given overrides (None: the run's), checked before
    anything is sent to the device."""
    import math

    tr = dict(data.config["training"])
    tr.update({k: v for k, v in overrides.items() if v is not None})
    rules = {"epochs": (1, None, "--epochs"), "batch_new": (1, 65535, "--batch-new"),
             "batch_replay": (0, 65535, "--batch-replay")}
    for key, (low, high, option) in rules.items():
        v = tr[key]
        if int(v) != v or v < low or (high is not None and v > high):
            raise StreamError(f"{option} must be a whole number of at least {low}"
                              + (f" and at most {high}" if high else "") + f", got {v}")
        tr[key] = int(v)
    for key, option, ok, what in (
            ("lr", "--lr", lambda v: 0 < v <= 10, "in (0, 10]"),
            ("momentum", "--momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("clip_norm", "--clip-norm", lambda v: v > 0, "above 0")):
        v = float(tr[key])
        if not math.isfinite(v) or not ok(v):
            raise StreamError(f"{option} must be {what}, got {tr[key]}")
        tr[key] = v
    problem = spec.train_limits_error(tr)  # the ranges the device itself enforces
    if problem:
        raise StreamError(f"training settings refused: {problem}; choose a value within it")
    return tr


def _stream_checked(session: Session, data: RunData, run_dir, results: dict, task: int,
                    where: dict, *, tr: dict, progress, echo, board_hint) -> dict:
    info = session.info
    stats0 = parse_stats(session.call("STATS"))
    started = time.monotonic()

    device_log = open_session_log(results, data, info)
    # The first device task also measures the deployed model: the row of the last known task.
    deploy_row = str(data.known - 1)
    if task == data.known and deploy_row not in device_log["rows"]:
        echo(f"Evaluating the deployed model on tasks 0..{data.known - 1} ...")
        t_eval = time.monotonic()
        row, _ = evaluate(session, data, data.known - 1, progress)
        device_log["rows"][deploy_row] = row
        device_log["deploy_eval_seconds"] = time.monotonic() - t_eval

    x8, y = data.samples("train", task)
    bn = int(tr["batch_new"])
    if len(y) < bn:
        raise StreamError(f"task {task} has {len(y)} training samples, fewer than one mini-batch "
                          f"of {bn}: lower --batch-new")
    used = (len(y) // bn) * bn
    bx, by = data.buffer(task)

    where["begun"] = True  # from here on the device's state may change
    device_log["in_progress"] = {"task": task, "interrupted": False}
    from tinycil.runfolder import RunFolder

    RunFolder(run_dir).write_results(results)
    session.call("TRAIN_CONTROL", train_control_payload(
        lr=tr["lr"], momentum=tr["momentum"], clip_norm=tr["clip_norm"],
        batch_new=tr["batch_new"], batch_replay=tr["batch_replay"], seed=data.seed,
        epochs=tr["epochs"], **device_training_control(tr)))
    session.call("BEGIN_TASK", begin_task_payload(data.units(data.tasks[task])))

    losses: list[float] = []
    bar = _bar(int(tr["epochs"]) * used, f"task {task} train", "sample", progress)

    def on_progress(p):
        losses.append(p["loss"])
        if bar is not None:
            bar.set_postfix(loss=f"{p['loss']:.3f}", refresh=False)

    session.on_progress = on_progress
    t_train = time.monotonic()
    from tinycil.learn.simulate import stream_order

    # A frame that completes a mini-batch is answered only after the device's training step,
    # which can take far longer than the round trip of the other frames (seconds for a trainable
    # convolution on the emulated board of a loaded machine). Resending it after the link's
    # RTO would be taken for a loss: the window sent again, the frames made smaller. So such a
    # frame waits for twice the slowest step reply seen lately before it is resent.
    step_wait = [0.0]
    step_sent: dict = {}  # seq -> when a frame that completes a mini-batch left

    def answered(reply, n):
        sent = step_sent.pop(reply.seq, None)
        if sent is not None:
            step_wait[0] = max(time.monotonic() - sent, 0.9 * step_wait[0])
        if bar is not None:
            bar.update(n)

    plan = FramePlan(x8)
    for epoch in range(int(tr["epochs"])):
        order = stream_order(len(y), data.seed, task, epoch)[:used]
        s = 0
        while s < used:  # frames sized by the session to the link's measured loss
            idx = order[s:s + session.samples_in_frame(plan, order[s:])]
            n = len(idx)
            stepping = (s + n) // bn > s // bn  # the device trains a mini-batch before it answers
            seq = session.send("TRAIN_SAMPLES", samples_payload(x8[idx], y[idx], 0,
                                                                plan.fill_or_none),
                               on_reply=lambda r, n=n: answered(r, n),
                               timeout=2.0 * step_wait[0] if stepping and step_wait[0] else None)
            if stepping:
                step_sent[seq] = time.monotonic()
            s += n
    session.flush()
    train_seconds = time.monotonic() - t_train
    if bar is not None:
        bar.close()

    # Every training sample must have reached the device before the task may end.
    expected = int(tr["epochs"]) * used
    mid = parse_stats(session.call("STATS"))
    _confirm(mid["new_samples"] - stats0["new_samples"], expected, "training samples", task,
             data, info, run_dir, board_hint)
    # The last frame ends the task: the device runs the end-of-task pass (balance_steps steps of
    # batch_replay samples, each about as long as a streamed mini-batch's step, whose reply time
    # step_wait tracks) and, with persistence, saves its state before answering, which takes
    # seconds on a real flash (nothing else is in flight meanwhile).
    ing = device_ingredients(tr)
    balance = ing["balance_steps"]
    head_on = ing["discriminant_weight"] > 0
    done = _send_ending_with(session, "BUFFER_SAMPLES", bx, by, 0, FLAGS["END_OF_TASK"],
                             timeout=spec.PERSIST_SAVE_TIMEOUT + 2.0 * balance * step_wait[0])
    if done.code != spec.STATUS["OK"]:
        raise StreamError(f"the device did not confirm the end of task {task} ({done.code_name}): "
                          + recovery_advice(data, info, str(run_dir), board_hint))
    stats1 = parse_stats(session.call("STATS"))
    _confirm(stats1["buffer_fill"] - mid["buffer_fill"], len(by), "buffer samples", task, data,
             info, run_dir, board_hint)
    head_info = None
    if head_on:
        # The discriminant head's statistics: the task's samples once more, every one, in the
        # data set's order, forward only; the last frame fits the head, and the device saves
        # its state there (with persistence), not at END_OF_TASK.
        if done.detail != spec.SAVE_DEFERRED or not stats1["head_observing"]:
            raise StreamError(f"the device did not begin the discriminant head's statistics at the "
                              f"end of task {task}: its firmware predates the head; flash it "
                              f"again (`tinycil flash --run {run_dir}`)")
        done, head_info = _observe_task(session, data, task, x8, y, stats1, progress)
    saved = done.detail == 0
    if done.detail not in (0, 2):  # 2: tc_persist UNAVAILABLE, a build without persistence
        echo(f"warning: the device could not save its learned state ({done.text}); it keeps "
             "learning but forgets this task at a reset")

    t_eval = time.monotonic()
    row, summary = evaluate(session, data, task, progress)
    eval_seconds = time.monotonic() - t_eval
    stats2 = parse_stats(session.call("STATS"))
    new = stats1["new_samples"] - stats0["new_samples"]
    ticks = stats1["train_ticks"] - stats0["train_ticks"]
    steps = stats1["steps"] - stats0["steps"]
    stepped = stats1["samples_stepped"] - stats0["samples_stepped"]
    measured = {
        "task": task, "row": row, "seconds": time.monotonic() - started,
        "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "eval_samples": int(stats2["eval_samples"] - stats1["eval_samples"]),
        "eval_ticks": int(stats2["eval_ticks"] - stats1["eval_ticks"]),
        "samples": int(new), "steps": int(steps),
        "samples_per_second": new / train_seconds if train_seconds > 0 else None,
        "counter": stats1["counter_kind_name"].lower(),
        "ticks_per_train_sample": ticks / new if new else None,
        "ticks_per_step_sample": ticks / stepped if stepped else None,
        "last_loss": losses[-1] if losses else None,
        "buffer_fill": stats1["buffer_fill"], "stack_used": stats1["stack_used"],
        "arena_bytes": stats1["arena_bytes"], "ram_used": stats1["ram_used"],
        "link": session.stats.as_dict(), "training": tr, "per_class": summary["per_class"],
        "state_saved": saved,
    }
    if head_info is not None:
        measured["head"] = head_info
    # The task is complete: every sample, buffer sample and the end of the task confirmed.
    device_log["rows"][str(task)] = row
    device_log["tasks"][str(task)] = measured
    device_log["signature"] = data.signature.hex()
    device_log.pop("in_progress", None)
    _record_device(run_dir, data, results, info, stats1)
    echo(f"task {task}: {int(steps)} steps on {int(new)} samples in {train_seconds:.1f} s, "
         f"accuracy " + " ".join(f"{100 * a:.1f}" for a in row))
    return measured


def _send_ending_with(session: Session, message: str, x: np.ndarray, y: np.ndarray, flags: int,
                      last_flags: int, timeout: float, on_frame=None):
    """Sends samples in frames sized by the session, every frame but the last with `flags`;
    once they are all answered, the last one with `flags | last_flags` (the request that
    completes something: it is answered after the device's work). Returns the last reply."""
    plan = FramePlan(x)
    s = 0
    while True:
        n = session.samples_in_frame(plan, np.arange(s, len(y)))
        if s + n >= len(y):
            break
        session.send(message, samples_payload(x[s:s + n], y[s:s + n], flags, plan.fill_or_none),
                     on_reply=(lambda r, n=n: on_frame(n)) if on_frame is not None else None)
        s += n
    session.flush()
    done = session.call(message, samples_payload(x[s:], y[s:], flags | last_flags,
                                                 plan.fill_or_none), timeout=timeout)
    if on_frame is not None:
        on_frame(len(y) - s)
    return done


def _observe_task(session: Session, data: RunData, task: int, x8: np.ndarray, y: np.ndarray,
                  before: dict, progress: bool):
    """Streams the task's samples as OBSERVE frames, the last one FIT_HEAD; returns its reply
    and what the head's statistics counted (for the FLOPs: tinycil.learn.simulate's
    head_stats_flops)."""
    bar = _bar(len(y), f"task {task} head", "sample", progress)
    done = _send_ending_with(session, "TRAIN_SAMPLES", x8, y, FLAGS["OBSERVE"], FLAGS["FIT_HEAD"],
                             timeout=spec.PERSIST_SAVE_TIMEOUT + 10.0,
                             on_frame=bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    if done.code != spec.STATUS["OK"]:
        raise StreamError(f"the device did not fit the discriminant head of task {task} "
                          f"({done.code_name}: {done.text})")
    after = parse_stats(session.call("STATS"))
    if after["observed_samples"] - before["observed_samples"] != len(y):
        raise StreamError(f"the device observed {after['observed_samples'] - before['observed_samples']} "
                          f"of the {len(y)} samples of task {task} for its head: the task is not "
                          f"complete and was not recorded")
    # the buffer classes whose scatter the fit adds: not the task's, at least two samples
    held = np.concatenate([data.buffer_units(t) for t in range(task + 1)]).astype(np.int64)
    counts = np.bincount(held, minlength=after["classes_seen"])
    own = set(int(u) for u in np.unique(y))
    scatter = int(sum(counts[c] for c in range(len(counts)) if c not in own and counts[c] >= 2))
    return done, {"observed": int(len(y)), "buffer": int(after["buffer_fill"]),
                  "buffer_scatter": scatter, "features": int(after["head_features"]),
                  "classes": int(after["classes_seen"]), "fitted": int(after["head_classes"]) > 0}


def _confirm(got: int, want: int, what: str, task: int, data: RunData, info: dict, run_dir,
             board_hint: str) -> None:
    if got != want:
        raise StreamError(f"the device confirmed {got} of the {want} {what} of task {task}: the "
                          f"task is not complete and was not recorded. "
                          + recovery_advice(data, info, str(run_dir), board_hint))


def _read_results(run_dir) -> dict:
    from tinycil.runfolder import RunFolder

    run = RunFolder(run_dir)
    return run.read_results() if run.results_path.is_file() else {}


def _record_device(run_dir, data: RunData, results: dict, info: dict, stats: dict) -> None:
    """results.json: the "device" RESULT of the device's current session over the tasks it
    completed so far (a square matrix up to the last one), the raw rows in "device_log".

    A row the device did not measure in this session (a host-learned task before the last known
    one, or tasks completed before a restored state) is the host reference's: it is marked in
    "rows_from_host", never passed off as the device's; without a host reference the RESULT
    waits until every row is the device's."""
    from tinycil.learn.metrics import make_result
    from tinycil.runfolder import RunFolder

    cfg = data.config
    log = results["device_log"]
    # What the device said of itself, kept so that the RESULT can be completed later, when a
    # host reference arrives after the device's tasks (complete_device_result).
    log["resources"] = {"ram_used": info.get("ram_used") or stats.get("ram_used"),
                        "flash_used": info.get("flash_used"),
                        "counter_kind_name": stats["counter_kind_name"]}
    rows = log["rows"]
    host = (results.get("method") or {}).get("accuracy_matrix")
    last = max(int(k) for k in rows)
    R, from_host = [], []
    for i in range(last + 1):
        if str(i) in rows:
            R.append(list(rows[str(i)]) + [None] * (last - i))
        elif host is not None and i < len(host):
            R.append(list(host[i][:i + 1]) + [None] * (last - i))
            from_host.append(i)
        else:
            RunFolder(run_dir).write_results(results)
            return
    tasks_done = sorted(int(k) for k in log["tasks"])
    ticks = [log["tasks"][str(t)]["ticks_per_train_sample"] for t in tasks_done]
    ticks = [t for t in ticks if t]
    buf = cfg.get("buffer", {})
    result = make_result(R, train_flops=_device_flops(results, data) or 0.0,
                         buffer_samples=buf.get("samples", 0), buffer_bytes=buf.get("bytes", 0),
                         buffer_fraction=buf.get("fraction", 0.0),
                         instructions_per_train_sample=(sum(ticks) / len(ticks)) if ticks else None,
                         ram_bytes=info.get("ram_used") or stats.get("ram_used"),
                         flash_bytes=info.get("flash_used"))
    result["tasks_measured"] = last + 1
    result["tasks_completed"] = tasks_done
    result["rows_from_host"] = from_host
    result["session"] = dict(log["session"])
    result["counter"] = stats["counter_kind_name"].lower()
    results.update({"dataset": cfg["dataset"], "board": cfg.get("board") or results.get("board"),
                    "seed": cfg["seed"], "tasks": cfg["task_classes"],
                    "known_tasks": cfg["known_tasks"], "device": result})
    RunFolder(run_dir).write_results(results)


def complete_device_result(run_dir) -> bool:
    """Writes the "device" RESULT that waited for the host reference (a run with several known
    tasks, streamed before the host simulation was recorded: the rows of the known tasks before
    the last are the host's). True when results.json has a "device" RESULT afterwards."""
    from tinycil.runfolder import RunFolder

    run = RunFolder(run_dir)
    results = run.read_results() if run.results_path.is_file() else {}
    if "device" in results:
        return True
    log = results.get("device_log")
    if not isinstance(log, dict) or not log.get("tasks"):
        return False
    last = log["tasks"][max(log["tasks"], key=int)]
    # a record written before "resources" was kept: the last task's own measurements
    res = log.get("resources") or {"ram_used": last.get("ram_used"), "flash_used": None,
                                   "counter_kind_name": last.get("counter", "")}
    _record_device(run_dir, RunData.load(run_dir), results,
                   {"ram_used": res["ram_used"], "flash_used": res["flash_used"]},
                   {"ram_used": res["ram_used"], "counter_kind_name": res["counter_kind_name"]})
    return "device" in results


def _device_flops(results: dict, data: RunData) -> float:
    """Training FLOPs: the host's for the known tasks plus, per streamed task, the samples the
    device stepped on times the plan's forward + backward FLOPs per sample of that task, and the
    discriminant head's statistics pass."""
    from tinycil.learn.simulate import head_stats_flops

    total = float(data.config.get("host", {}).get("train_flops", 0.0))
    for t, m in results["device_log"]["tasks"].items():
        per = data.plan[int(t)].get("device_flops_per_sample", {}).get("total", 0.0)
        stepped = m["samples"] * (1 + m["training"]["batch_replay"] / m["training"]["batch_new"])
        # The end-of-task pass (the buffer always holds the known tasks' samples here).
        stepped += device_ingredients(m["training"])["balance_steps"] * m["training"]["batch_replay"]
        total += stepped * float(per)
        if m.get("head"):  # the discriminant head's statistics pass
            fwd = data.plan[int(t)]["device_flops_per_sample"]
            total += head_stats_flops(m["head"], float(fwd["backbone_fwd"]) + float(fwd["tail_fwd"]))
    return total
