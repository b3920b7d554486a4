"""Command-line options shared by `experiment`, `prepare` and `run`.

The three commands describe the same learning scenario, so they take the same options with the
same names, defaults and help; each decorator below adds one group of them.
"""

from __future__ import annotations

from pathlib import Path

import click

from tinycil.protocol_spec import BUFFER_STORE_NAMES

FAMILY_CHOICES = ("auto", "mlp", "cnn2d", "cnn1d", "dscnn")


def parse_resize(ctx, param, value):
    """`HxW` -> (H, W); `none` -> "none" (keep the data set's size); nothing -> None (its default)."""
    if value is None:
        return None
    if value.lower() == "none":
        return "none"
    try:
        h, w = (int(p) for p in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"use HxW, e.g. 14x14 (or 'none' to keep the original size); got {value!r}")
    if h < 1 or w < 1:
        raise click.BadParameter(f"sizes must be positive, got {value!r}")
    return (h, w)


def split_resize(resize):
    """The (resize, keep_size) pair the engine takes, from parse_resize's value."""
    if resize == "none":
        return None, True
    return resize, False


def parse_trainable(ctx, param, value):
    """`auto` or a positive number of trainable weight layers."""
    if value is None or str(value).lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"give a number of layers or 'auto', got {value!r}") from None
    if n < 1:
        raise click.BadParameter(f"at least the output layer trains: give 1 or more, got {n}")
    return n


def parse_class_order(ctx, param, value):
    """`9,8,7,...` -> [9, 8, 7, ...]; the split into tasks checks it names every class once."""
    if value is None:
        return None
    try:
        order = [int(p) for p in value.replace(" ", "").split(",") if p != ""]
    except ValueError:
        raise click.BadParameter(f"list class ids separated by commas, e.g. 9,8,7,6,5,4,3,2,1,0; "
                                 f"got {value!r}") from None
    if not order:
        raise click.BadParameter("the class order is empty")
    return order


def _apply(func, options):
    for option in reversed(options):
        func = option(func)
    return func


def scenario_options(func):
    """Data set, task split, buffer, model family and distillation."""
    return _apply(func, [
        click.option("--dataset", "-d", required=True,
                     help="digits, mnist5k, fashion-mnist, basic-motions (offline); mnist, cifar10, "
                          "har, speech-commands, core50 (with --data-dir); keywords (espeak-ng)."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder holding the data set's files in their standard layout."),
        click.option("--resize", callback=parse_resize, default=None, metavar="HxW",
                     help="Resize images (default 14x14 for 28x28 sets so the model fits a board; "
                          "'none' keeps them)."),
        click.option("--tasks", "n_tasks", type=click.IntRange(min=1), default=None,
                     help="Number of tasks the classes are split into (default: 5, or the most "
                          "below 5 that give every task the same number of classes, at least "
                          "two: basic-motions 2)."),
        click.option("--known", type=click.IntRange(min=0), default=1, show_default=True,
                     help="Tasks known on the host at deployment; the device learns the others."),
        click.option("--buffer", "buffer_fraction", type=float, default=0.01, show_default=True,
                     help="Replay buffer per task, as a fraction of its training data "
                          "(at least one sample per class)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--class-order", callback=parse_class_order, default=None, metavar="C,C,...",
                     help="Order of the classes before they are split into tasks, e.g. "
                          "9,8,7,6,5,4,3,2,1,0 (default: the seed's order); recorded in the run."),
        click.option("--family", type=click.Choice(FAMILY_CHOICES), default="auto", show_default=True,
                     help="Model family; auto picks by modality (image cnn2d, inertial cnn1d, "
                          "audio dscnn)."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs per task (default per data set)."),
        click.option("--distill", "distill_method", type=click.Choice(["dm", "gm"]), default="dm",
                     show_default=True,
                     help="Distillation: distribution matching or gradient matching."),
        click.option("--distill-iters", type=click.IntRange(min=0), default=None,
                     help="Distillation iterations per task (default per data set)."),
        click.option("--max-train", type=click.IntRange(min=1), default=None,
                     help="Use at most this many training samples (stratified)."),
        click.option("--max-test", type=click.IntRange(min=1), default=None,
                     help="Use at most this many test samples (stratified)."),
        click.option("--quick", is_flag=True, help="Few epochs and distillation iterations: a smoke run."),
    ])


def model_file_option(func):
    """`--model FILE`: the user's own model instead of a family (checked layer by layer first)."""
    return click.option(
        "--model", "model_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Your own model instead of a family: a Keras model (.keras, .h5; the device trains "
             "its last --trainable layers, auto: the most that fit the board's RAM) or a full-int8 "
             ".tflite (the "
             "frozen part; tinycil adds a trainable dense head). New classes add output rows and "
             "units to the trainable hidden layers; see `tinycil check-model`.")(func)


def check_model_file_option(model_file) -> None:
    """Refuse a model file the device cannot run, naming every layer, before any work. A
    Sequential saved without an input shape is checked once prepare has built it for the data
    set (prepare_run's check_user_model)."""
    if model_file is not None:
        from tinycil.cli.quiet import import_tensorflow
        from tinycil.deploy.modelcheck import check_model_file

        import_tensorflow()
        check_model_file(model_file, later_if_unbuilt=True)


def device_training_options(func):
    """What the device trains and how: trainable tail and SGD settings."""
    return _apply(func, [
        click.option("--trainable", "--tail-layers", "tail_layers", callback=parse_trainable,
                     default="auto", show_default=True, metavar="N|auto",
                     help="Weight layers at the end that the device trains (and grows) in float32 "
                          "- conv2d, depthwise conv2d, dense, with the pooling between them; the "
                          "rest is the frozen int8 prefix. auto: the most whose memory at the "
                          "final size fits the board's RAM (chosen by the memory plan)."),
        click.option("--frozen-width", type=click.Choice(["auto", "final", "known"]),
                     default="auto", show_default=True,
                     help="Width of the frozen int8 prefix, which never grows on the device. "
                          "auto: the width the model reaches at the end, the whole model scaled "
                          "down (7/8, 3/4, 5/8, 1/2) until it fits the board, else the known "
                          "tasks' width; final: the final width whatever the board; known: the "
                          "known tasks' (narrow) width."),
        click.option("--lr", type=float, default=None, help="SGD learning rate (default 0.05)."),
        click.option("--momentum", type=float, default=None, help="SGD momentum (default 0.9)."),
        click.option("--batch-new", type=int, default=None,
                     help="Streamed samples per mini-batch (default per data set)."),
        click.option("--batch-replay", type=int, default=None,
                     help="Buffer samples per mini-batch (default per data set)."),
        click.option("--clip-norm", type=float, default=None,
                     help="Global gradient norm clip (default 5.0)."),
        click.option("--balance-steps", type=click.IntRange(0, 10000), default=None,
                     help="End of every task: SGD steps of class-balanced replay over the whole "
                          "buffer at a tenth of --lr, evening out the bias toward the newest "
                          "classes (default 150; 0: none)."),
        click.option("--asymmetric-ce/--no-asymmetric-ce", "asymmetric_ce", default=None,
                     help="A streamed sample's loss spans only its own task's classes, a replayed "
                          "one every class seen (ER-ACE; default on, off for fashion-mnist and "
                          "mnist5k, where the plain loss measured better)."),
        click.option("--replay-shift", type=click.IntRange(0, 4), default=None,
                     help="Move every replayed sample by up to N pixels (time steps of a series) "
                          "each way, so a small buffer is not learned by heart (default 1 for "
                          "images of at least 12 pixels a side, else 0: not moved)."),
        click.option("--head-weight", "head_weight", type=click.FloatRange(0.0, 10.0), default=None,
                     help="Weight of the discriminant head's logits added to the output layer's "
                          "(a linear discriminant over the last hidden features, fitted by the "
                          "device after every task from the task's samples streamed once more; "
                          "default 0.5; 0: no head)."),
        click.option("--replay-store", type=click.Choice(BUFFER_STORE_NAMES), default="inputs",
                     show_default=True,
                     help="What the device's replay buffer keeps: int8 inputs (as the paper), or "
                          "the frozen backbone's int8 latents (same training, replayed samples "
                          "skip the backbone)."),
    ])
