"""Commands of the host learning side: the host-only study and the report of a run.

TensorFlow is imported inside the commands only.
"""

from __future__ import annotations

from pathlib import Path

import click

from tinycil.cli.errors import check_output_folder, friendly
from tinycil.cli.options import scenario_options, split_resize


@click.command("experiment")
@scenario_options
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (default runs/<dataset>-experiment).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly(also=(ValueError,))
def experiment(dataset, data_dir, resize, n_tasks, known, buffer_fraction, seed, class_order,
               family, epochs, distill_method, distill_iters, max_train, max_test, quick, output,
               no_progress):
    """Host-only study: the method (size-adaptive model + distilled replay) against naive
    fine-tuning, random replay, a fixed final-size model and joint training."""
    from tinycil.cli.quiet import import_tensorflow

    import_tensorflow()
    from tinycil.learn.experiment import run_experiment
    from tinycil.report import write_report
    from tinycil.runfolder import RunFolder, default_run_dir

    out = output or default_run_dir(dataset, "experiment")
    check_output_folder(out)
    resize, keep_size = split_resize(resize)
    results = run_experiment(
        dataset, n_tasks=n_tasks, known=known, buffer_fraction=buffer_fraction, seed=seed,
        family=family, epochs=epochs, data_dir=data_dir, resize=resize, keep_size=keep_size,
        distill_method=distill_method, distill_iters=distill_iters, quick=quick,
        max_train=max_train, max_test=max_test, progress=not no_progress, class_order=class_order)
    run = RunFolder(out, create=True)  # only once there is something to put in it
    run.write_config(results["config"])
    run.write_plan(results["config"]["plan"])
    run.write_results(results)
    table = write_report(run, results)
    click.echo(table)
    click.echo(f"\nwrote {run.results_path}, {run.summary_path}, {run.plot_path}, "
               f"{run.matrix_csv_path}, {run.metrics_csv_path}")


@click.command("report")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@friendly
def report(run_dir):
    """Print the table of a finished run and re-render its summary.md, plot.png and CSV files."""
    from tinycil.report import ReportError, write_report
    from tinycil.runfolder import RunFolder, write_results_csv

    run = RunFolder(run_dir)
    _complete_device_record(run)
    try:
        table = write_report(run)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    write_results_csv(run.path, run.read_results())
    click.echo(table)
    click.echo(f"\nwrote {run.summary_path}, {run.plot_path}, {run.matrix_csv_path}, "
               f"{run.metrics_csv_path}")


def _complete_device_record(run) -> None:
    """A device that learned tasks of a run with several known tasks has a RESULT only with the
    host reference's rows of the tasks it did not measure: compute that reference when it is
    missing, so that the report never leaves out what the device learned."""
    from tinycil.link.stream import complete_device_result

    if not run.results_path.is_file():
        return
    try:
        results = run.read_results()
    except (OSError, ValueError):
        return  # a damaged results.json: the report itself says what is wrong with it
    if not isinstance(results, dict):
        return
    log = results.get("device_log")
    if "device" in results or not isinstance(log, dict) or not log.get("tasks"):
        return
    if "method" not in results:
        from tinycil.learn.simulate import record_simulation

        click.echo("the device's record needs the host reference for the rows it did not measure: "
                   "simulating the device procedure on the host ...")
        record_simulation(run.path, progress=True, echo=click.echo)
    complete_device_result(run.path)


# `prepare` (the host half of a device run) lives in its own module.
from tinycil.cli.prepare import prepare_command  # noqa: E402

COMMANDS = [experiment, prepare_command, report]
