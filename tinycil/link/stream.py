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
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tinycil import protocol_spec as spec
from tinycil.link.bridge import DeviceError
from tinycil.link.session import (DeviceReset, Session, begin_task_payload, parse_eval_result,
                             parse_stats, samples_payload, samples_per_frame,
                             train_control_payload)

FLAGS = spec.SAMPLES_FLAGS
PERSIST_NAMES = {v: k for k, v in spec.PERSIST_STATES.items()}


class StreamError(DeviceError):
    """A run and a device that do not go together; the message says how to fix it."""


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
        from tinycil.runfolder import read_signature
        from tinycil.runfolder import RunFolder

        run = RunFolder(run_dir)
        cfg = run.read_config()
        plan = run.read_plan()
        if "input_quantization" not in cfg or "task_classes" not in cfg:
            raise StreamError(f"{run.config_path} was not written by `tinycil prepare`: prepare "
                              "the run first")
        tasks = [list(map(int, t)) for t in cfg["task_classes"]]
        unit_of = {int(c): k for k, c in enumerate(plan[-1]["seen_classes"])}
        size = int(np.prod(cfg["input_shape"]))
        data = cls(run_dir, cfg, plan, tasks, int(cfg["known_tasks"]), int(cfg["seed"]), unit_of,
                   read_signature(run_dir), size)
        data._ds = None
        return data

    def units(self, y) -> np.ndarray:
        return np.array([self.unit_of[int(c)] for c in y], dtype=np.uint8)

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
        from tinycil.runfolder import RunFolder

        buf = RunFolder(self.run_dir).load_buffer(task)
        if "x_int8" not in buf:
            raise StreamError(f"the buffer of task {task} holds no int8 samples: prepare the run "
                              "again")
        return np.asarray(buf["x_int8"]).reshape(len(buf["y"]), -1), self.units(buf["y"])


def _has_signature(sig: str) -> bool:
    return bool(sig) and set(sig) != {"0"}


def tasks_held(data: RunData, info: dict) -> int | None:
    """The last task whose classes the device has seen (from INFO.classes_seen), or None when
    the count matches no task boundary of the run's plan."""
    seen = int(info.get("classes_seen", 0))
    done = [t for t in range(len(data.tasks)) if data.plan[t]["classes_seen"] == seen]
    return done[-1] if done else None


def check_device(data: RunData, info: dict, task: int, run_name: str, board_hint: str) -> None:
    """Refuse a device (its INFO) that runs another model or is not at the point `task`
    continues from."""
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
    before = data.plan[task - 1]["classes_seen"]
    seen = int(info["classes_seen"])
    if seen != before:
        held = tasks_held(data, info)
        state = f"has learned up to task {held}" if held is not None else f"has seen {seen} classes"
        nxt = held + 1 if held is not None else data.known
        raise StreamError(f"the device {state}, task {task} continues from task {task - 1}: "
                          + (f"stream task {nxt} next" if held is not None and nxt < task else
                             f"flash it again (`tinycil flash {board_hint} --run {run_name}`) "
                             f"and stream from task {data.known}"))


def reset_advice(data: RunData, info: dict, run_name: str, board_hint: str) -> str:
    """What to do after the device restarted, from its INFO after the restart."""
    persist = PERSIST_NAMES.get(int(info.get("persist", 0)), "OFF")
    held = tasks_held(data, info)
    if persist in ("RESTORED", "SAVED") and held is not None and held + 1 < len(data.tasks):
        return (f"It restored the state it saved after task {held} (save "
                f"#{info.get('persist_sequence')}): stream task {held + 1} again (`tinycil "
                f"stream --run {run_name} {board_hint} --task {held + 1}`).")
    if persist in ("RESTORED", "SAVED") and held is not None:
        return f"It restored the state it saved after task {held}, the run's last task."
    return (f"Everything it learned since it was flashed is gone: flash it again (`tinycil "
            f"flash {board_hint} --run {run_name}`) and stream again from task {data.known}.")


def evaluate(session: Session, data: RunData, upto: int, progress: bool) -> tuple[list, dict]:
    """Accuracy on the test data of tasks 0..upto (predictions from the device)."""
    parts = [data.samples("test", j) for j in range(upto + 1)]
    per_frame = samples_per_frame(data.input_size, spec.EVAL_MAX_SAMPLES)
    chunks = [(j, s) for j, (x, _) in enumerate(parts) for s in range(0, len(x), per_frame)]
    preds = [np.zeros(len(y), np.int64) for _, y in parts]
    bar = _bar(sum(len(y) for _, y in parts), "evaluate", "sample", progress)
    summary: dict = {}

    for k, (j, s) in enumerate(chunks):
        x, y = parts[j]
        flags = (FLAGS["EVAL_START"] if k == 0 else 0) | (
            FLAGS["EVAL_SUMMARY"] if k == len(chunks) - 1 else 0)

        def store(reply, j=j, s=s, n=len(y[s:s + per_frame])):
            p, per_class = parse_eval_result(reply)
            preds[j][s:s + n] = p
            if per_class:
                summary["per_class"] = per_class
            if bar is not None:
                bar.update(n)

        session.send("EVAL_SAMPLES", samples_payload(x[s:s + per_frame], y[s:s + per_frame], flags),
                     on_reply=store)
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
                timeout: float = 2.0, max_sends: int = 10, data: RunData | None = None) -> dict:
    """Teach the device behind `link` task `task` of the run; returns what was measured and
    records the accuracy row in the run's results.json ("device")."""
    run_name = str(run_dir)
    data = data or RunData.load(run_dir)
    info = link.hello()
    check_device(data, info, task, run_name, board_hint)
    session = Session(link, info, timeout=timeout, max_sends=max_sends)
    try:
        return _stream_checked(session, data, run_dir, task, epochs=epochs, lr=lr,
                               momentum=momentum, batch_new=batch_new, batch_replay=batch_replay,
                               clip_norm=clip_norm, progress=progress, echo=echo)
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


def _stream_checked(session: Session, data: RunData, run_dir, task: int, *, epochs, lr,
                    momentum, batch_new, batch_replay, clip_norm, progress, echo) -> dict:
    info = session.info
    stats0 = parse_stats(session.call("STATS"))

    tr = dict(data.config["training"])
    overrides = {"epochs": epochs, "lr": lr, "momentum": momentum, "batch_new": batch_new,
                 "batch_replay": batch_replay, "clip_norm": clip_norm}
    tr.update({k: v for k, v in overrides.items() if v is not None})
    started = time.monotonic()

    results = _read_results(run_dir)
    device_log = results.setdefault("device_log", {"rows": {}, "tasks": {}})
    # The first device task also measures the deployed model: the row of the last known task.
    deploy_row = str(data.known - 1)
    if task == data.known and deploy_row not in device_log["rows"]:
        echo(f"Evaluating the deployed model on tasks 0..{data.known - 1} ...")
        row, _ = evaluate(session, data, data.known - 1, progress)
        device_log["rows"][deploy_row] = row

    session.call("TRAIN_CONTROL", train_control_payload(
        lr=tr["lr"], momentum=tr["momentum"], clip_norm=tr["clip_norm"],
        batch_new=tr["batch_new"], batch_replay=tr["batch_replay"], seed=data.seed,
        epochs=tr["epochs"]))
    session.call("BEGIN_TASK", begin_task_payload(data.units(data.tasks[task])))

    x8, y = data.samples("train", task)
    bn = int(tr["batch_new"])
    if len(y) < bn:
        raise StreamError(f"task {task} has {len(y)} training samples, fewer than one mini-batch "
                          f"of {bn}: lower --batch-new")
    used = (len(y) // bn) * bn
    per_frame = samples_per_frame(data.input_size)
    losses: list[float] = []
    bar = _bar(int(tr["epochs"]) * used, f"task {task} train", "sample", progress)

    def on_progress(p):
        losses.append(p["loss"])
        if bar is not None:
            bar.set_postfix(loss=f"{p['loss']:.3f}", refresh=False)

    session.on_progress = on_progress
    t_train = time.monotonic()
    from tinycil.learn.simulate import stream_order

    for epoch in range(int(tr["epochs"])):
        order = stream_order(len(y), data.seed, task, epoch)[:used]
        for s in range(0, used, per_frame):
            idx = order[s:s + per_frame]
            n = len(idx)
            session.send("TRAIN_SAMPLES", samples_payload(x8[idx], y[idx]),
                         on_reply=(lambda r, n=n: bar.update(n)) if bar is not None else None)
    session.flush()
    train_seconds = time.monotonic() - t_train
    if bar is not None:
        bar.close()

    bx, by = data.buffer(task)
    per_frame_b = samples_per_frame(data.input_size)
    starts = list(range(0, len(by), per_frame_b)) or [0]
    for s in starts[:-1]:
        session.send("BUFFER_SAMPLES", samples_payload(bx[s:s + per_frame_b], by[s:s + per_frame_b]))
    session.flush()
    # The last frame ends the task; a device with persistence saves its state before answering,
    # which takes seconds on a real flash (nothing else is in flight meanwhile).
    s = starts[-1]
    done = session.call("BUFFER_SAMPLES", samples_payload(
        bx[s:s + per_frame_b], by[s:s + per_frame_b], FLAGS["END_OF_TASK"]),
        timeout=spec.PERSIST_SAVE_TIMEOUT)
    saved = done.detail == 0
    if done.detail not in (0, 2):  # 2: tc_persist UNAVAILABLE, a build without persistence
        echo(f"warning: the device could not save its learned state ({done.text}); it keeps "
             "learning but forgets this task at a reset")

    row, summary = evaluate(session, data, task, progress)
    stats1 = parse_stats(session.call("STATS"))
    new = stats1["new_samples"] - stats0["new_samples"]
    ticks = stats1["train_ticks"] - stats0["train_ticks"]
    steps = stats1["steps"] - stats0["steps"]
    stepped = stats1["samples_stepped"] - stats0["samples_stepped"]
    measured = {
        "task": task, "row": row, "seconds": time.monotonic() - started,
        "train_seconds": train_seconds, "samples": int(new), "steps": int(steps),
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
    device_log["rows"][str(task)] = row
    device_log["tasks"][str(task)] = measured
    device_log["signature"] = data.signature.hex()
    _record_device(run_dir, data, results, info, stats1)
    echo(f"task {task}: {int(steps)} steps on {int(new)} samples in {train_seconds:.1f} s, "
         f"accuracy " + " ".join(f"{100 * a:.1f}" for a in row))
    return measured


def _read_results(run_dir) -> dict:
    from tinycil.runfolder import RunFolder

    run = RunFolder(run_dir)
    return run.read_results() if run.results_path.is_file() else {}


def _record_device(run_dir, data: RunData, results: dict, info: dict, stats: dict) -> None:
    """results.json: the "device" RESULT over the tasks measured so far (a square matrix of the
    tasks 0..last streamed one until every task is done), the raw rows in "device_log"."""
    from tinycil.learn.metrics import make_result
    from tinycil.runfolder import RunFolder

    cfg = data.config
    rows = results["device_log"]["rows"]
    # Rows of host-learned tasks before the last one cannot be measured on the device: they are
    # the host's (the deployed model is what the host evaluated).
    host = (results.get("method") or {}).get("accuracy_matrix")
    last = max(int(k) for k in rows)
    R = []
    for i in range(last + 1):
        if str(i) in rows:
            R.append(list(rows[str(i)]) + [None] * (last - i))
        elif host is not None:
            R.append(list(host[i][:i + 1]) + [None] * (last - i))
        else:
            return
    tasks_done = [int(k) for k in results["device_log"]["tasks"]]
    ticks = [results["device_log"]["tasks"][str(t)]["ticks_per_train_sample"] for t in tasks_done]
    ticks = [t for t in ticks if t]
    buf = cfg.get("buffer", {})
    result = make_result(R, train_flops=_device_flops(results, data) or 0.0,
                         buffer_samples=buf.get("samples", 0), buffer_bytes=buf.get("bytes", 0),
                         buffer_fraction=buf.get("fraction", 0.0),
                         instructions_per_train_sample=(sum(ticks) / len(ticks)) if ticks else None,
                         ram_bytes=info.get("ram_used") or stats.get("ram_used"),
                         flash_bytes=info.get("flash_used"))
    result["tasks_measured"] = last + 1
    result["counter"] = stats["counter_kind_name"].lower()
    results.update({"dataset": cfg["dataset"], "board": cfg.get("board") or results.get("board"),
                    "seed": cfg["seed"], "tasks": cfg["task_classes"],
                    "known_tasks": cfg["known_tasks"], "device": result})
    RunFolder(run_dir).write_results(results)


def _device_flops(results: dict, data: RunData) -> float:
    """Training FLOPs: the host's for the known tasks plus, per streamed task, the samples the
    device stepped on times the plan's forward + backward FLOPs per sample of that task."""
    total = float(data.config.get("host", {}).get("train_flops", 0.0))
    for t, m in results["device_log"]["tasks"].items():
        per = data.plan[int(t)].get("device_flops_per_sample", {}).get("total", 0.0)
        stepped = m["samples"] * (1 + m["training"]["batch_replay"] / m["training"]["batch_new"])
        total += stepped * float(per)
    return total
