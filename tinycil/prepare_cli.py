"""`tinycil prepare`: the host half of a device run.

TensorFlow is imported inside the command only.
"""

from __future__ import annotations

from pathlib import Path

import click

FAMILY_CHOICES = ("auto", "mlp", "cnn2d", "cnn1d", "dscnn")


def _parse_resize(ctx, param, value):
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


@click.command("prepare")
@click.option("--dataset", "-d", required=True,
              help="digits, mnist5k, fashion-mnist, basic-motions (offline); mnist, cifar10, har, "
                   "speech-commands, core50 (with --data-dir); keywords.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the data set's files in their standard layout.")
@click.option("--resize", callback=_parse_resize, default=None, metavar="HxW",
              help="Resize images (default 14x14 for 28x28 sets so the model fits a board; 'none' keeps them).")
@click.option("--tasks", "n_tasks", type=int, default=5, show_default=True, help="Number of tasks.")
@click.option("--known", type=int, default=1, show_default=True,
              help="Tasks learned on the host before deployment; the device learns the others.")
@click.option("--buffer", "buffer_fraction", type=float, default=0.01, show_default=True,
              help="Replay buffer per task, as a fraction of its training data (at least 1 per class).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--family", type=click.Choice(FAMILY_CHOICES), default="auto", show_default=True,
              help="Model family; auto picks by modality (image cnn2d, inertial cnn1d, audio dscnn).")
@click.option("--tail-layers", type=int, default=2, show_default=True,
              help="Dense layers at the end that the device trains (and grows) in float32.")
@click.option("--board", default=None, help="Board the run is meant for (recorded in config.json).")
@click.option("--epochs", type=int, default=None, help="Epochs per task (default per data set).")
@click.option("--lr", type=float, default=None, help="SGD learning rate (default 0.05).")
@click.option("--momentum", type=float, default=None, help="SGD momentum (default 0.9).")
@click.option("--batch-new", type=int, default=None, help="Streamed samples per mini-batch (default per data set).")
@click.option("--batch-replay", type=int, default=None, help="Buffer samples per mini-batch (default per data set).")
@click.option("--clip-norm", type=float, default=None, help="Global gradient norm clip (default 5.0).")
@click.option("--distill", "distill_method", type=click.Choice(["dm", "gm"]), default="dm", show_default=True,
              help="Distillation: distribution matching or gradient matching.")
@click.option("--distill-iters", type=int, default=None, help="Distillation iterations per task (default per data set).")
@click.option("--max-train", type=int, default=None, help="Use at most this many training samples (stratified).")
@click.option("--max-test", type=int, default=None, help="Use at most this many test samples (stratified).")
@click.option("--quick", is_flag=True, help="Few epochs and distillation iterations: a smoke run.")
@click.option("--simulate/--no-simulate", default=True, show_default=True,
              help="Run the host reference of the device's training and store it in results.json.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (default runs/<dataset>-device).")
def prepare_command(dataset, data_dir, resize, n_tasks, known, buffer_fraction, seed, family, tail_layers,
                    board, epochs, lr, momentum, batch_new, batch_replay, clip_norm, distill_method,
                    distill_iters, max_train, max_test, quick, simulate, output):
    """The host half of a device run: train the model on the known tasks, quantise its backbone to
    int8, distil every task to a small buffer, and write the growth plan into a run folder."""
    from tinycil.datasets import DatasetError
    from tinycil.prepare import PrepareError, prepare_run
    from tinycil.runfolder import default_run_dir
    from tinycil.tasks import TaskSplitError

    out = output or default_run_dir(dataset, "device")
    keep_size = resize == "none"
    try:
        config = prepare_run(
            dataset, out, n_tasks=n_tasks, known=known, buffer_fraction=buffer_fraction, seed=seed,
            family=family, tail_layers=tail_layers, resize=None if keep_size else resize,
            keep_size=keep_size, data_dir=data_dir, board=board, epochs=epochs, lr=lr,
            momentum=momentum, batch_new=batch_new, batch_replay=batch_replay, clip_norm=clip_norm,
            distill=distill_method, distill_iters=distill_iters, quick=quick, max_train=max_train,
            max_test=max_test, echo=click.echo)
        if simulate:
            from tinycil.simulate import SimulationError, record_simulation

            try:
                result = record_simulation(out, progress=True, echo=click.echo)
            except SimulationError as exc:
                raise click.ClickException(str(exc)) from None
            rows = [" ".join("  -  " if a is None else f"{a:.3f}" for a in row)
                    for row in result["accuracy_matrix"]]
            click.echo("host reference of the device run (accuracy matrix, rows: after task i):")
            click.echo("\n".join("  " + r for r in rows))
            click.echo(f"final average accuracy {result['final_avg_accuracy']:.3f}")
    except (DatasetError, TaskSplitError, PrepareError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"run folder {out}: {config['buffer']['samples']} buffer samples "
               f"({config['buffer']['bytes']} bytes); next: `tinycil flash --run {out} --board B`")
