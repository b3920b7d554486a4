"""Learning on the device: stream, selftest."""

from __future__ import annotations

from pathlib import Path

import click

from tinycil.cli.errors import friendly


def _port(board_id, port):
    from tinycil.cli.device import _resolve_port

    return _resolve_port(board_id, port)


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (prepared and exported, see `tinycil prepare`, `tinycil flash --run`).")
@click.option("--board", "-b", "board_id", help="Board id; for the emulated board, finds the running QEMU.")
@click.option("--port", "-p", help="Serial port or URL (/dev/ttyACM0, COM3, socket://127.0.0.1:PORT).")
@click.option("--baud", type=int, help="Baud rate (default: the board's, else 115200).")
@click.option("--task", "task", type=int, required=True, help="Index of the task to teach.")
@click.option("--epochs", type=int, help="Epochs (default: the run's).")
@click.option("--lr", type=float, help="Learning rate (default: the run's).")
@click.option("--momentum", type=float, help="Momentum (default: the run's).")
@click.option("--batch-new", type=int, help="Streamed samples per mini-batch (default: the run's).")
@click.option("--batch-replay", type=int, help="Buffer samples per mini-batch (default: the run's).")
@click.option("--clip-norm", type=float, help="Gradient norm clip (default: the run's).")
@click.option("--timeout", type=float, default=2.0, show_default=True,
              help="Seconds of silence before unanswered frames are sent again.")
@click.option("--restart", is_flag=True,
              help="Restart the device first, so that it falls back to the state it saved after "
                   "the previous task (or its deployed model): for a task that was interrupted.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly
def stream(run_dir, board_id, port, baud, task, epochs, lr, momentum, batch_new, batch_replay,
           clip_norm, timeout, restart, no_progress):
    """Teach the device one task of a run over the serial link, then record its accuracy."""
    from tinycil.link.bridge import DeviceLink
    from tinycil.link.stream import RunData, stream_task, training_settings

    if not timeout > 0:
        raise click.BadParameter(f"must be above 0 seconds, got {timeout}", param_hint="--timeout")
    # The run folder's files and the settings are checked before the device is touched.
    data = RunData.load(run_dir)
    training_settings(data, epochs=epochs, lr=lr, momentum=momentum, batch_new=batch_new,
                      batch_replay=batch_replay, clip_norm=clip_norm)
    if not data.known <= task < len(data.tasks):
        raise click.BadParameter(
            f"run {run_dir} has device tasks {data.known}..{len(data.tasks) - 1} (tasks before "
            f"{data.known} were learned on the host), got {task}", param_hint="--task")
    data.dataset()  # the task's samples come from the data set: found and read before streaming
    url, default_baud, board = _port(board_id, port)
    hint = f"--board {board.id}" if board else f"--board B --port {url}"
    if board is not None and port:
        hint += f" --port {port}"
    with DeviceLink(url, baudrate=baud or default_baud or 115200, timeout=1.0, retries=5) as link:
        stream_task(run_dir, link, task, epochs=epochs, lr=lr, momentum=momentum,
                    batch_new=batch_new, batch_replay=batch_replay, clip_norm=clip_norm,
                    progress=not no_progress, echo=click.echo, board_hint=hint, timeout=timeout,
                    data=data, restart=restart)
    click.echo(f"recorded in {run_dir / 'results.json'} (\"device\")")


@click.command()
@click.option("--board", "-b", "board_id", help="Board id; for the emulated board, finds the running QEMU.")
@click.option("--port", "-p", help="Serial port or URL.")
@click.option("--baud", type=int, help="Baud rate (default: the board's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly
def selftest(board_id, port, baud, as_json):
    """Run the firmware's kernel checks on the device and print their cost per MAC, measured
    with the board's counter (cycles on the NUCLEO, instructions on the emulated board)."""
    import json

    from tinycil.link.bridge import DeviceLink
    from tinycil.link.session import Session, parse_selftest

    from tinycil.cli.device import counter_label, icount_of

    url, default_baud, board = _port(board_id, port)
    with DeviceLink(url, baudrate=baud or default_baud or 115200, timeout=1.0, retries=5) as link:
        result = parse_selftest(Session(link).call("SELFTEST"))
    kind = result["counter_kind_name"]
    icount = icount_of(board, port)
    result["counter"] = counter_label(kind, icount)
    exact = kind == "CYCLES" or (kind == "INSTRUCTIONS" and icount)
    warning = None
    if kind == "INSTRUCTIONS" and not icount:
        warning = ("warning: " + ("QEMU runs without -icount" if icount is False else
                                  "cannot tell whether QEMU runs with -icount")
                   + ": the per-MAC figures below follow wall time (host load, QEMU speed), not "
                     "instructions; restart the emulator with `tinycil flash --board "
                   + (board.id if board else "B") + " --icount` for exact instruction counts")
    result["counter_exact"] = bool(exact)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if warning:
        click.echo(warning, err=True)
    unit = {"CYCLES": "cycles", "INSTRUCTIONS": "instructions" if icount else "ticks"}.get(
        kind, "ticks")
    for r in result["results"]:
        click.echo(f"{r['check']:<20} {'pass' if r['passed'] else 'FAIL'}  "
                   f"{r['ticks_per_mac']:.2f} {unit}/MAC")
    if result["ticks_per_train_sample"]:
        click.echo(f"{'training':<20}       {result['ticks_per_train_sample']:,.0f} {unit}/sample")
    else:
        click.echo("training: no sample streamed since boot (stream a task first to measure it)")
    if result["failed"]:
        raise click.ClickException("some kernel checks failed on the device")


COMMANDS = [stream, selftest]
