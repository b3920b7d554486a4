"""Commands of the host learning side: the host-only study and the report of a run.

TensorFlow is imported inside the commands only.
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
    parts = value.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"use HxW, e.g. 14x14 (or 'none' to keep the original size); got {value!r}")
    if h < 1 or w < 1:
        raise click.BadParameter(f"sizes must be positive, got {value!r}")
    return (h, w)


@click.command("experiment")
@click.option("--dataset", "-d", required=True,
              help="digits, mnist5k, fashion-mnist, basic-motions (offline); mnist, cifar10, har, "
                   "speech-commands, core50 (with --data-dir); keywords.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the data set's files in their standard layout.")
@click.option("--resize", callback=_parse_resize, default=None, metavar="HxW",
              help="Resize images (default 14x14 for 28x28 sets so the model fits a board; 'none' keeps them).")
@click.option("--tasks", "n_tasks", type=int, default=5, show_default=True, help="Number of tasks.")
@click.option("--known", type=int, default=1, show_default=True,
              help="Tasks known on the host at deployment (recorded; the host study trains every task).")
@click.option("--buffer", "buffer_fraction", type=float, default=0.01, show_default=True,
              help="Replay buffer per task, as a fraction of its training data (at least 1 per class).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--family", type=click.Choice(FAMILY_CHOICES), default="auto", show_default=True,
              help="Model family; auto picks by modality (image cnn2d, inertial cnn1d, audio dscnn).")
@click.option("--epochs", type=int, default=None, help="Epochs per task (default per data set).")
@click.option("--distill", "distill_method", type=click.Choice(["dm", "gm"]), default="dm", show_default=True,
              help="Distillation: distribution matching or gradient matching.")
@click.option("--distill-iters", type=int, default=None, help="Distillation iterations per task (default per data set).")
@click.option("--max-train", type=int, default=None, help="Use at most this many training samples (stratified).")
@click.option("--max-test", type=int, default=None, help="Use at most this many test samples (stratified).")
@click.option("--quick", is_flag=True, help="Few epochs and distillation iterations: a smoke run.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (default runs/<dataset>-experiment).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def experiment(dataset, data_dir, resize, n_tasks, known, buffer_fraction, seed, family, epochs,
               distill_method, distill_iters, max_train, max_test, quick, output, no_progress):
    """Host-only study: the method (size-adaptive model + distilled replay) against naive
    fine-tuning, random replay, a fixed final-size model and joint training."""
    from tinycil.datasets import DatasetError
    from tinycil.experiment import run_experiment
    from tinycil.report import write_report
    from tinycil.runfolder import RunFolder, default_run_dir
    from tinycil.tasks import TaskSplitError

    run = RunFolder(output or default_run_dir(dataset, "experiment"), create=True)
    if resize == "none":
        resize = None
        keep_size = True
    else:
        keep_size = False
    try:
        results = run_experiment(
            dataset, n_tasks=n_tasks, known=known, buffer_fraction=buffer_fraction, seed=seed,
            family=family, epochs=epochs, data_dir=data_dir, resize=resize, keep_size=keep_size,
            distill_method=distill_method, distill_iters=distill_iters, quick=quick,
            max_train=max_train, max_test=max_test, progress=not no_progress)
    except (DatasetError, TaskSplitError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    run.write_config(results["config"])
    run.write_plan(results["config"]["plan"])
    run.write_results(results)
    table = write_report(run, results)
    click.echo(table)
    click.echo(f"\nwrote {run.results_path}, {run.summary_path}, {run.plot_path}")


@click.command("report")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
def report(run_dir):
    """Print the table of a finished run and re-render its summary.md and plot.png."""
    from tinycil.report import write_report
    from tinycil.runfolder import RunFolder, RunFolderError

    try:
        run = RunFolder(run_dir)
        table = write_report(run)
    except RunFolderError as exc:
        raise click.ClickException(str(exc)) from None
    except (KeyError, TypeError) as exc:
        raise click.ClickException(f"{run_dir}/results.json does not follow the results format "
                                   f"({exc!r}); re-create the run") from None
    click.echo(table)
    click.echo(f"\nwrote {run.summary_path}, {run.plot_path}")


# `prepare` (the host half of a device run) lives in its own module.
from tinycil.prepare_cli import prepare_command  # noqa: E402

COMMANDS = [experiment, prepare_command, report]
