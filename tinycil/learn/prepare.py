"""The host half of a device run: everything the device needs before it starts learning.

`prepare_run` loads the data set, splits it into tasks, sizes the model for the classes of the
known tasks, trains it on the host, quantises its backbone to int8, distils every task's training
data into a small buffer (the known tasks' buffers are the device's initial replay memory, the
field tasks' buffers are sent by the bridge after each task: the host sees a field task's data
while it streams it), writes the growth plan and saves it all in a run folder.

The model is cut in two: the frozen int8 prefix (possibly empty) keeps the size it has after the
known tasks; the tail (the last `tail_layers` weight layers with the pooling between them: conv2d,
depthwise conv2d, pooling, dense) trains in float32 on the device and grows, following the width
policy as classes arrive. `tail_layers` may be "auto": a `choose_cut` callable (the memory plan's,
tinycil.deploy.cut) picks the most trainable layers that fit the board.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tinycil import software

BACKBONE_FILE = "backbone.tflite"


class PrepareError(ValueError):
    """Settings that cannot make a device run (say which setting to change)."""


# How wide the frozen prefix of a device run is (prepare_run's frozen_width).
FROZEN_WIDTHS = ("auto", "final", "known")


def backbone_path(run) -> Path:
    """Where the run folder keeps the int8 backbone (.tflite)."""
    path = getattr(run, "backbone_path", None)
    return Path(path) if path is not None else run.path / BACKBONE_FILE


def plan_for_device(policy, tasks, num_classes: int, known: int, tail_layers: int,
                    family: str | None = None, prefix_scale: float | None = None) -> list[dict]:
    """The growth plan of a device run: per task the classes, the classes seen (count and ids in
    output-unit order), the widths of every hidden layer and of the tail's hidden layers.

    Tasks < known are learned on the host; from then on the frozen prefix keeps its widths and
    only the tail's layers follow the policy. `prefix_scale` None: the prefix has the known
    tasks' widths (the narrow start of the size-adaptive model). A factor s in (0, 1]: the
    model follows the policy with every full width times s, and the prefix is built at its
    FINAL width from the start: it can never grow on the device, and a prefix sized for the
    first task's few classes is what limits the device (Fashion-MNIST, seed 0, simulated:
    73.5% with the known tasks' [5, 9] filters, 76.2% with [12, 24] at s = 3/4).
    `family` tells which widths belong to the prefix (depthwise layers take none); without it
    the tail is taken to hold dense layers only.
    """
    from tinycil.learn.models import backbone_width_count
    from tinycil.learn.sizing import growth_plan

    if prefix_scale is not None:
        policy = policy.scaled(prefix_scale)
    plan = growth_plan(policy, tasks, num_classes)
    if family is not None:
        n_backbone = backbone_width_count(family, tail_layers)
    else:
        n_backbone = len(policy.full_widths) - (tail_layers - 1)
    known_widths = plan[max(known, 1) - 1]["widths"]
    prefix = (plan[-1] if prefix_scale is not None else plan[max(known, 1) - 1])["widths"]
    prefix = list(prefix[:n_backbone])
    seen_ids: list[int] = []
    for i, entry in enumerate(plan):
        seen_ids += [int(c) for c in tasks[i]]
        if i < known:
            widths = prefix + list(known_widths[n_backbone:])
        else:
            widths = prefix + list(entry["widths"][n_backbone:])
        entry["widths"] = widths
        entry["tail_widths"] = widths[n_backbone:]
        entry["seen_classes"] = list(seen_ids)
        entry["outputs"] = len(seen_ids) if i >= known else sum(len(t) for t in tasks[:known])
        entry["learned_on"] = "host" if i < known else "device"
    return plan


def device_flops_per_sample(model, tail_layers: int) -> dict:
    """FLOPs per training sample on the device: backbone forward, tail forward and backward.

    The device computes no input gradient for the first tail layer (nothing below it trains), so
    that term of models.count_cost's backward count is left out (count_cost leaves it out itself
    when the whole model trains).
    """
    from tinycil.learn.models import count_cost, weight_layers

    cost = count_cost(model)
    first_tail = weight_layers(model)[-tail_layers].name
    names = [l["name"] for l in cost["layers"]]
    cut = names.index(first_tail)
    backbone = sum(l["fwd_flops"] for l in cost["layers"][:cut])
    tail_fwd = sum(l["fwd_flops"] for l in cost["layers"][cut:])
    tail_bwd = sum(l["bwd_flops"] for l in cost["layers"][cut:])
    if any(l["macs"] for l in cost["layers"][:cut]):
        tail_bwd -= 2 * cost["layers"][cut]["macs"]
    return {"backbone_fwd": backbone, "tail_fwd": tail_fwd, "tail_bwd": tail_bwd,
            "total": backbone + tail_fwd + tail_bwd}


def _check_known(known: int, n_tasks: int) -> None:
    if not 1 <= known < n_tasks:
        raise PrepareError(f"--known must be at least 1 and below the number of tasks ({n_tasks}) so "
                           f"that the device has a task to learn; got {known}")


def prepare_run(dataset: str, out_dir, n_tasks: int | None = None, known: int = 1, buffer_fraction: float = 0.01,
                seed: int = 0, family: str = "auto", tail_layers: int | str = 2, resize=None, data_dir=None,
                board: str | None = None, epochs: int | None = None, lr: float | None = None,
                momentum: float | None = None, batch_new: int | None = None,
                batch_replay: int | None = None, clip_norm: float | None = None,
                balance_steps: int | None = None, asymmetric_ce: bool | None = None,
                replay_shift: int | None = None, discriminant_weight: float | None = None,
                replay_store: str = "inputs", distill: str = "dm",
                distill_iters: int | None = None, quick: bool = False, keep_size: bool = False,
                max_train: int | None = None, max_test: int | None = None, progress: bool = True,
                echo=print, check_model=None, class_order=None, choose_cut=None,
                model_file=None, frozen_width: str = "auto", choose_sized_cut=None,
                check_user_model=None) -> dict:
    """Prepare a device run in `out_dir`; returns the config written to config.json.

    None for a hyper-parameter takes the data set's default (tinycil.learn.experiment.DEFAULTS and
    tinycil.learn.train.TrainConfig); `resize` None takes the data set's default size unless keep_size.
    `check_model(model, plan, sizing)`, when given, may refuse the untrained model (raise).
    `class_order` (class ids) orders the classes before they are split into tasks (default: the
    seed's order). `tail_layers` "auto" asks `choose_cut(family=, input_shape=, num_classes=,
    plan_of=, sizing=)` for the number of trainable layers; it returns (number, reason), and the
    reason is printed and recorded in config.json. `model_file` (a .keras/.h5 model or a full-int8
    .tflite, checked layer by layer by the caller) replaces the family: see tinycil.learn.usermodel.
    `check_user_model(model, path)` (tinycil.deploy.modelcheck.check_user_model) checks a Keras
    model once loaded, simplified and, when saved without an input shape, built for the data set.
    `frozen_width`: how wide the frozen prefix is (plan_for_device): "auto" at its final width,
    the whole model scaled down until it fits the board: `choose_sized_cut(family, input_shape,
    tail_layers or None for auto, plan_of(n, scale), sizing)` returns (trainable layers, scale
    or None, reason) (tinycil.deploy.cut.choose_sized_cut; without it the known tasks' widths);
    "final" at the policy's final width whatever the board; "known" at the known tasks' widths.
    """
    from tinycil.datasets import load_dataset
    from tinycil.learn.distill import distill_task
    from tinycil.learn.experiment import QUICK, buffer_bytes, defaults_for
    from tinycil.protocol_spec import BUFFER_STORE_NAMES, HEAD_MAX_FEATURES
    from tinycil.learn.models import (DEFAULT_WIDTHS, build_model, family_for_modality, split_model,
                                      train_flops_per_sample, weight_layer_count)
    from tinycil.learn.quantize import quantize_backbone, quantize_inputs
    from tinycil.runfolder import RunFolder
    from tinycil.learn.sizing import WidthPolicy
    from tinycil.learn.tasks import default_task_count, make_tasks, task_subset
    from tinycil.learn.train import TrainConfig, Trainer, accuracy, default_replay_shift

    started = time.perf_counter()
    n_steps = 7  # progress lines: load, train, quantise, distil, cost, save, done
    step = iter(range(1, n_steps + 1))

    def say(msg):
        if progress:
            echo(f"[{next(step)}/{n_steps}] {msg}")

    if n_tasks is not None:  # given: refused before any work; the default needs the data set
        _check_known(known, n_tasks)
    if not 0.0 < buffer_fraction <= 1.0:
        raise PrepareError(f"--buffer must be a fraction in (0, 1], got {buffer_fraction}")
    if tail_layers != "auto" and (not isinstance(tail_layers, int) or tail_layers < 1):
        raise PrepareError(f"--trainable must be at least 1 (the output layer) or auto, got {tail_layers}")
    if tail_layers == "auto" and choose_cut is None and model_file is None:
        raise PrepareError("--trainable auto plans the memory of a board: pass --board, or give "
                           "the number of trainable layers")
    if distill not in ("dm", "gm"):
        raise PrepareError(f"--distill must be dm or gm, got {distill!r}")
    if frozen_width not in FROZEN_WIDTHS:
        raise PrepareError(f"--frozen-width must be one of {', '.join(FROZEN_WIDTHS)}, got "
                           f"{frozen_width!r}")
    if model_file is not None and family != "auto":
        raise PrepareError(f"--family {family} chooses one of tinycil's models; your own model "
                           f"(--model) is the model: leave --family out")
    if model_file is not None and frozen_width != "auto":
        raise PrepareError(f"--frozen-width {frozen_width} applies to tinycil's model families; "
                           f"your own model (--model) keeps its own widths: leave it out")
    if replay_store not in BUFFER_STORE_NAMES:
        raise PrepareError(f"--replay-store must be {' or '.join(BUFFER_STORE_NAMES)}, got "
                           f"{replay_store!r}")

    d = defaults_for(dataset)
    if resize is None and not keep_size:
        resize = d.resize
    base = TrainConfig()
    cfg = TrainConfig(
        epochs=epochs if epochs is not None else (QUICK["epochs"] if quick else d.epochs),
        lr=lr if lr is not None else base.lr,
        momentum=momentum if momentum is not None else base.momentum,
        batch_new=batch_new if batch_new is not None else d.batch_new,
        batch_replay=batch_replay if batch_replay is not None else d.batch_replay,
        clip_norm=clip_norm if clip_norm is not None else base.clip_norm,
        balance_steps=balance_steps if balance_steps is not None else base.balance_steps,
        asymmetric_ce=asymmetric_ce if asymmetric_ce is not None else d.asymmetric_ce,
        replay_shift=replay_shift if replay_shift is not None else base.replay_shift,
        discriminant_weight=(discriminant_weight if discriminant_weight is not None
                             else base.discriminant_weight))
    if not 0.0 <= cfg.discriminant_weight <= 10.0:
        raise PrepareError(f"--head-weight must be in [0, 10] (0: no discriminant head), got "
                           f"{cfg.discriminant_weight}")
    iters = distill_iters if distill_iters is not None else (
        QUICK["distill_iters"] if quick else d.distill_iters)

    say(f"loading {dataset}")
    ds = load_dataset(dataset, data_dir=data_dir, resize=resize, seed=seed,
                      max_train=max_train, max_test=max_test)
    if replay_shift is None:
        cfg.replay_shift = default_replay_shift(ds.modality, ds.input_shape)
    if n_tasks is None:
        n_tasks = default_task_count(ds.num_classes)
        _check_known(known, n_tasks)
    tasks = make_tasks(ds.num_classes, n_tasks, seed, order=class_order)
    user, policy, cut_reason = None, None, None
    if model_file is not None:
        # The user's own model: its layers, its cut, fixed hidden widths (output rows grow).
        from tinycil.learn.usermodel import UserModel

        user = UserModel(model_file, ds.input_shape, sum(len(t) for t in tasks[:known]),
                         tail_layers, echo=echo,  # how it is cut and grown: said always
                         check=check_user_model)
        family, tail_layers, n_weight_layers = "user", user.tail_layers, user.n_weight
        if tail_layers == "auto" and choose_cut is None:
            tail_layers = user.tail_layers = user.dense_tail()
    else:
        if family == "auto":
            family = family_for_modality(ds.modality)
        policy = WidthPolicy(DEFAULT_WIDTHS[family])
        n_weight_layers = weight_layer_count(family)
    per_task = [max(len(t), int(round(buffer_fraction * int(np.isin(ds.y_train, t).sum()))))
                for t in tasks]
    sizing = {"known": known, "tasks": tasks, "batch_new": cfg.batch_new,
              "batch_replay": cfg.batch_replay, "replay_store": replay_store,
              "input_shape": list(ds.input_shape), "buffer_samples_per_task": per_task}
    if tail_layers != "auto" and tail_layers > n_weight_layers:
        raise PrepareError(f"--trainable {tail_layers}: family {family} has {n_weight_layers} "
                           f"weight layers; use at most {n_weight_layers}")
    prefix_scale = None
    if user is None and frozen_width == "auto" and choose_sized_cut is not None:
        # The board decides both: how many layers train and how wide the model is.
        tail_layers, prefix_scale, cut_reason = choose_sized_cut(
            family, tuple(ds.input_shape), None if tail_layers == "auto" else tail_layers,
            lambda n, s: plan_for_device(policy, tasks, ds.num_classes, known, n, family,
                                         prefix_scale=s), sizing)
    elif tail_layers == "auto":
        if user is not None:
            # The user's own layers are the candidates, planned as the export plans them.
            tail_layers, cut_reason = choose_cut(
                family=family, input_shape=tuple(ds.input_shape), num_classes=ds.num_classes,
                plan_of=lambda n: user.plan(tasks, known, n, quiet=True), sizing=sizing,
                user_model=user)
            user.set_cut(tail_layers, cut_reason)  # said always, as the rest of the cut
        else:
            tail_layers, cut_reason = choose_cut(
                family=family, input_shape=tuple(ds.input_shape), num_classes=ds.num_classes,
                plan_of=lambda n: plan_for_device(policy, tasks, ds.num_classes, known, n, family),
                sizing=sizing)
    if user is None and frozen_width == "final":
        prefix_scale = 1.0
        cut_reason = ((cut_reason + "; ") if cut_reason else "") + \
            "frozen prefix at its final width (--frozen-width final)"
    if cut_reason and progress and user is None:
        echo(cut_reason)
    plan = (user.plan(tasks, known) if user is not None
            else plan_for_device(policy, tasks, ds.num_classes, known, tail_layers, family,
                                 prefix_scale=prefix_scale))
    known_classes = plan[known - 1]["seen_classes"]
    unit_of = {c: k for k, c in enumerate(plan[-1]["seen_classes"])}
    to_units = np.vectorize(lambda c: unit_of[int(c)], otypes=[np.int64])

    parts = []
    for i, t in enumerate(tasks):
        xtr, ytr = task_subset(ds.x_train, ds.y_train, t)
        xte, yte = task_subset(ds.x_test, ds.y_test, t)
        if len(xtr) < cfg.batch_new or len(xte) == 0:
            raise PrepareError(f"task {i} (classes {t}) has {len(xtr)} training and {len(xte)} test "
                               f"samples: it needs at least one mini-batch ({cfg.batch_new}) and one "
                               f"test sample; lower --batch-new or use more data")
        parts.append((xtr, ytr, xte, yte))

    say(f"training a {family} model {plan[known - 1]['widths']} on the known task(s) "
        f"{tasks[:known]} for {cfg.epochs} epochs")
    if user is not None:
        model = user.model(len(known_classes), seed=seed)
    else:
        model = build_model(family, ds.input_shape, len(known_classes), plan[known - 1]["widths"],
                            seed=seed)
    if check_model is not None:
        # The caller's check of the model against its target (the command line plans its
        # memory on the board named with --board): a refusal comes now, before minutes of
        # training and distillation. learn/ knows no board, hence the callback.
        check_model(model, plan, {
            "tail_layers": tail_layers, "known": known, "tasks": tasks,
            "batch_new": cfg.batch_new, "batch_replay": cfg.batch_replay,
            "replay_store": replay_store, "input_shape": list(ds.input_shape),
            "own_model": None if user is None else user.kind,
            "buffer_samples_per_task": [
                max(len(t), int(round(buffer_fraction * len(p[0])))) for t, p in zip(tasks, parts)]})
    x_known = np.concatenate([p[0] for p in parts[:known]])
    # What the trained Keras model takes: the samples, or a user's .tflite part's outputs.
    features = user.features if user is not None else (lambda x: x)
    y_known = to_units(np.concatenate([p[1] for p in parts[:known]]))
    bar = _bar(progress, cfg.epochs, "train (host)")
    stats = Trainer(model, cfg).train_task(features(x_known), y_known, len(known_classes), task=0, seed=seed,
                                           progress=bar)
    bar.close()
    host_flops = float(stats["samples"]) * train_flops_per_sample(model)
    host_acc = [accuracy(model, features(p[2]), to_units(p[3]), len(known_classes)) for p in parts[:known]]

    say("quantising the backbone to int8")
    if user is not None:
        q = user.quantize(model, tail_layers, x_known)
    else:
        backbone, _ = split_model(model, tail_layers)
        q = quantize_backbone(backbone, x_known)

    say(f"distilling every task to {buffer_fraction:.2%} of its training data ({distill}, {iters} iterations)")
    buffers, distill_seconds = [], []
    for i, (xtr, ytr, _, _) in enumerate(parts):
        dset = distill_task(xtr, ytr, fraction=buffer_fraction, method=distill, iterations=iters,
                            seed=seed + i, progress=progress)
        x_int8 = quantize_inputs(dset.x, q.input_scale, q.input_zero_point)
        buffers.append((dset, x_int8))
        distill_seconds.append(float(dset.meta.get("seconds", 0.0)))

    say("costing the device's training steps")
    for i, entry in enumerate(plan):
        if i < known:
            continue
        grown = (user.grown(model, entry["widths"], entry["outputs"]) if user is not None
                 else build_model(family, ds.input_shape, entry["outputs"], entry["widths"]))
        entry["device_flops_per_sample"] = device_flops_per_sample(grown, tail_layers)
    head_features = int(np.prod(grown.layers[-1].input.shape[1:]))
    if cfg.discriminant_weight > 0 and head_features > HEAD_MAX_FEATURES:
        # the head's scatter matrix would take head_features^2 floats of RAM
        echo(f"note: no discriminant head: the output layer reads {head_features} features at "
             f"the final size, more than the {HEAD_MAX_FEATURES} the device's head allows")
        cfg.discriminant_weight = 0.0

    say(f"saving the run folder {out_dir}")
    run = RunFolder(out_dir, create=True)
    run.save_model(model)
    bpath = backbone_path(run)
    bpath.write_bytes(q.tflite_bytes)
    for i, (dset, x_int8) in enumerate(buffers):
        run.save_buffer(i, dset.x, dset.y, dset.y_soft, x_int8)
    run.write_plan(plan)
    n_train = sum(len(p[0]) for p in parts)
    n_buffer = sum(len(dset.x) for dset, _ in buffers)
    config = {
        "kind": "device",
        "dataset": dataset, "data_dir": None if data_dir is None else str(data_dir),
        "resize": list(resize) if resize and ds.modality == "image" else None,
        "max_train": max_train, "max_test": max_test,
        "seed": seed, "tasks": n_tasks, "task_classes": tasks, "known_tasks": known,
        "buffer_fraction": buffer_fraction,
        "distill": {"method": distill, "iterations": iters, "seconds_per_task": distill_seconds},
        "family": family, "width_policy": None if policy is None else policy.to_dict(),
        "user_model": None if user is None else user.describe(), "tail_layers": tail_layers,
        "cut_reason": cut_reason,
        "frozen_prefix": {"mode": frozen_width, "width_scale": prefix_scale},
        "class_order": [int(c) for t in tasks for c in t],
        "replay_store": replay_store,
        "training": cfg.to_dict(), "board": board, "quick": quick,
        "input_shape": list(ds.input_shape), "num_classes": ds.num_classes,
        "class_names": list(ds.class_names), "modality": ds.modality,
        "train_samples": n_train, "train_samples_per_task": [len(p[0]) for p in parts],
        "test_samples": sum(len(p[2]) for p in parts),
        # the device quantises inputs with these and dequantises the backbone's output (the latent)
        "input_quantization": {"scale": q.input_scale, "zero_point": q.input_zero_point},
        "latent_quantization": {"scale": q.output_scale, "zero_point": q.output_zero_point},
        "latent_shape": list(q.output_shape),
        "backbone_file": bpath.name,
        "buffer": {"samples": n_buffer,
                   "bytes": buffer_bytes(n_buffer, q.output_shape if replay_store == "latents"
                                         else ds.input_shape),
                   "fraction": n_buffer / n_train,
                   "samples_per_task": [len(dset.x) for dset, _ in buffers]},
        "host": {"train_flops": host_flops, "train_samples": stats["samples"],
                 "float_accuracy_known_tasks": host_acc},
        "software": software.versions(),
        # TensorFlow's CPU kernels choose their code by the processor's extensions (software.cpu)
        "cpu": software.cpu(),
    }
    run.write_config(config)
    say(f"prepared {run.path} in {time.perf_counter() - started:.1f} s")
    return config


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="epoch", leave=False)
