"""The whole story in one command: `tinycil run --dataset D --board B`.

prepare (host: train the known tasks, quantise, distil) -> export -> build -> flash (the emulated
board: QEMU in the background) -> stream every task the host did not know, evaluating after each
-> the host reference (tinycil.learn.simulate, and the firmware's own runtime built for the host,
tinycil.deploy.twin, when a host compiler is present) -> results.json, summary.md, plot.png.
The emulator is always stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from tinycil.cli.options import (check_model_file_option, device_training_options,
                                 model_file_option, scenario_options, split_resize)
from tinycil.cli.errors import check_output_folder, friendly


def compare_matrices(a, b) -> float:
    """Largest |a[i][j] - b[i][j]| over the entries both matrices have."""
    worst = 0.0
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            if x is not None and y is not None:
                worst = max(worst, abs(float(x) - float(y)))
    return worst


def twin_result(run_dir, results: dict, echo=print) -> dict | None:
    """The device procedure run by the firmware's own C++ runtime on the host (None when it
    cannot be built here). Rows of the known tasks are the host simulation's."""
    from tinycil.learn.metrics import make_result
    from tinycil.learn.simulate import RunInputs
    from tinycil.deploy.twin import Twin, TwinError, run_device_procedure

    try:
        twin = Twin(run_dir)
    except TwinError as exc:
        echo(f"host twin not available ({str(exc).splitlines()[0]}); comparing with the numpy "
             "simulation only")
        return None
    R = run_device_procedure(twin, RunInputs(run_dir))
    host = results["method"]["accuracy_matrix"]
    for i, row in enumerate(R):
        if row[0] is None:
            R[i] = list(host[i])
    method = results["method"]
    return make_result(R, train_flops=method["train_flops"], buffer_samples=method["buffer"]["samples"],
                       buffer_bytes=method["buffer"]["bytes"],
                       buffer_fraction=method["buffer"]["fraction"])


def run_end_to_end(dataset: str, board_id: str, out_dir=None, *, n_tasks: int | None = None, known: int = 1,
                   seed: int = 0, epochs: int | None = None, distill_iters: int | None = None,
                   quick: bool = False, port: str | None = None, icount: bool = True,
                   root: Path | None = None, progress: bool = True, echo=print,
                   prepare_kwargs: dict | None = None, link_wrapper=None,
                   reuse: bool = False) -> dict:
    """Returns results.json's content. `link_wrapper(url) -> url` may put something (the fault
    proxy of the tests) between the host and the device. `reuse` keeps an already prepared run
    folder instead of preparing it again."""
    from tinycil.deploy import emulator
    from tinycil.deploy.boards import load_board
    from tinycil.link.bridge import DeviceLink
    from tinycil.deploy.build import build
    from tinycil.deploy.export import export_run
    from tinycil.learn.prepare import prepare_run
    from tinycil.report import write_report
    from tinycil.runfolder import RunFolder, default_run_dir
    from tinycil.learn.simulate import record_simulation
    from tinycil.link.stream import (RunData, StreamError, TaskInterrupted, complete_device_result,
                                     stream_task)

    started = time.monotonic()
    # Where the wall time goes (seconds): the host's work, the device run, the host references.
    timing: dict = {}
    mark = [started]

    def lap(name: str) -> None:
        now = time.monotonic()
        timing[name] = timing.get(name, 0.0) + now - mark[0]
        mark[0] = now

    board = load_board(board_id, root) if root else load_board(board_id)
    run_dir = Path(out_dir) if out_dir else default_run_dir(dataset, "device")
    check_output_folder(run_dir)
    # What can fail without the host's work is checked before it: the board's serial port.
    if not board.emulated:
        url = device_port(board, port)
    if reuse and (run_dir / "config.json").is_file():
        echo(f"== reusing the prepared run {run_dir}")
    else:
        from tinycil.cli.fit import board_fit_check
        from tinycil.deploy.cut import cut_chooser, sized_cut_chooser

        echo(f"== prepare {dataset} into {run_dir}")
        prepare_run(dataset, run_dir, n_tasks=n_tasks, known=known, seed=seed, board=board.id,
                    epochs=epochs, distill_iters=distill_iters, quick=quick, progress=progress,
                    echo=echo, check_model=board_fit_check(board),
                    choose_cut=cut_chooser(board), choose_sized_cut=sized_cut_chooser(board),
                    **(prepare_kwargs or {}))
    lap("prepare")
    echo(f"== export for {board.id}")
    exported = export_run(run_dir, board, root=root)
    echo(f"model signature {exported.signature_hex}")
    lap("export")
    echo(f"== build firmware for {board.id}")
    built = build(board, root=root)
    echo(f"built in {built.seconds:.1f} s: {built.size_line()}")
    lap("build")

    state = None
    run = RunFolder(run_dir)
    # The device record of an earlier run in this folder moves to "device_history" when this
    # run's device session writes its own (tinycil.link.stream.open_session_log).
    try:
        if board.emulated:
            state = emulator.start(board, built.elf, icount=icount, record=False)
            url = state.url
            echo(f"== emulated board running (QEMU pid {state.pid}) at {url}")
        else:
            from tinycil.deploy.flash import flash_board, wait_for_hello

            res = flash_board(board, built.elf, built.bin, echo=echo)
            echo(f"flashed: {res.detail}")
            wait_for_hello(url, board.baudrate or 115200, timeout=10.0)  # it restarts after flashing
        if link_wrapper is not None:
            url = link_wrapper(url)
        data = RunData.load(run_dir)
        lap("start_device")
        hint = f"--board {board.id}"
        with DeviceLink(url, baudrate=board.baudrate or 115200, timeout=1.0, retries=10) as link:
            for t in range(data.known, len(data.tasks)):
                echo(f"== task {t}: classes {data.tasks[t]} -> device")
                try:
                    stream_task(run_dir, link, t, progress=progress, echo=echo, board_hint=hint,
                                data=data)
                except TaskInterrupted:
                    if not board.emulated:
                        raise  # the board keeps its state: the stream's advice holds
                    # The emulated board stops with this command: what it learned is gone.
                    raise TaskInterrupted(
                        f"interrupted during task {t}; the emulated board was stopped with "
                        f"this command, so nothing it learned remains"
                        + (f" (tasks {data.known}..{t - 1} are recorded in "
                           f"{run.results_path})" if t > data.known else "")
                        + f". To go on without preparing again: `tinycil flash --board "
                        f"{board.id} --run {run_dir}`, then `tinycil stream --run {run_dir} "
                        f"--board {board.id} --task {data.known}` and each later task, then "
                        f"`tinycil report {run_dir}`.") from None
    finally:
        if state is not None:
            emulator.stop_state(state)
    lap("device")  # every device task: streaming, training and evaluations on the device

    echo("== host reference (simulation of the device procedure)")
    record_simulation(run_dir, progress=False, echo=echo)
    # With several known tasks the device's RESULT waited for the host rows it needs.
    if not complete_device_result(run_dir):
        raise StreamError(f"the device completed no task of this run: no device result in "
                          f"{run.results_path}")
    lap("simulation")
    results = run.read_results()
    twin = twin_result(run_dir, results, echo=echo)
    lap("twin")
    device_R = results["device"]["accuracy_matrix"]
    fidelity = {"max_abs_diff_vs_simulation": compare_matrices(
        device_R, results["method"]["accuracy_matrix"])}
    if twin is not None:
        results["twin"] = twin
        fidelity["max_abs_diff_vs_twin"] = compare_matrices(device_R, twin["accuracy_matrix"])
    results["fidelity"] = fidelity
    results["seconds"] = time.monotonic() - started
    timing["total"] = results["seconds"]
    results["timing"] = timing
    run.write_results(results)
    table = write_report(run, results)
    echo(table)
    echo(f"device vs host simulation: largest difference {100 * fidelity['max_abs_diff_vs_simulation']:.2f} "
         "points" + (f"; vs the host twin {100 * fidelity['max_abs_diff_vs_twin']:.2f}"
                     if twin is not None else ""))
    echo(f"results: {run.results_path}, {run.summary_path}, {run.plot_path} "
         f"({results['seconds']:.0f} s)")
    return results


def device_port(board, port: str | None) -> str:
    """The serial port of a real board: --port, or the one ST-LINK attached; refused with what
    to do when there is none or several."""
    from tinycil.deploy.flash import stlink_ports
    from tinycil.link.bridge import PortNotFound, available_ports

    if port:
        return port
    found = stlink_ports()
    if len(found) == 1:
        return found[0]
    if not found:
        present = ", ".join(available_ports()) or "none"
        raise PortNotFound(f"no ST-LINK serial port found for {board.id}: plug the board in or "
                           f"pass --port (ports present: {present}); nothing was prepared yet")
    raise PortNotFound(f"several ST-LINK ports found ({', '.join(found)}): pass --port")


@click.command("run")
@scenario_options
@device_training_options
@model_file_option
@click.option("--board", "-b", "board_id", required=True, help="Board id (see `tinycil boards`).")
@click.option("--port", "-p", help="Serial port of a real board.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default runs/<dataset>-device).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly(also=(ValueError,))
def run(dataset, data_dir, resize, n_tasks, known, buffer_fraction, seed, class_order, family, epochs,
        distill_method, distill_iters, max_train, max_test, quick, tail_layers, frozen_width, lr,
        momentum, batch_new, batch_replay, clip_norm, balance_steps, asymmetric_ce, replay_shift,
        head_weight, replay_store, model_file,
        board_id, port, output, no_progress):
    """Everything end to end: prepare, export, build, flash, stream every new task, compare with
    the host reference, and write results.json, summary.md and plot.png."""
    from tinycil.cli.quiet import import_tensorflow

    import_tensorflow()
    resize, keep_size = split_resize(resize)
    check_model_file_option(model_file)
    from tinycil.deploy.modelcheck import check_user_model

    prepare_kwargs = dict(
        data_dir=data_dir, resize=resize, keep_size=keep_size, buffer_fraction=buffer_fraction,
        family=family, distill=distill_method, max_train=max_train, max_test=max_test,
        tail_layers=tail_layers, frozen_width=frozen_width, lr=lr, momentum=momentum, batch_new=batch_new,
        batch_replay=batch_replay, clip_norm=clip_norm, balance_steps=balance_steps,
        asymmetric_ce=asymmetric_ce, replay_shift=replay_shift, discriminant_weight=head_weight,
        replay_store=replay_store, class_order=class_order, model_file=model_file,
        check_user_model=check_user_model)
    run_end_to_end(dataset, board_id, output, n_tasks=n_tasks, known=known, seed=seed,
                   epochs=epochs, distill_iters=distill_iters, quick=quick, port=port,
                   progress=not no_progress, echo=click.echo, prepare_kwargs=prepare_kwargs)


COMMANDS = [run]
