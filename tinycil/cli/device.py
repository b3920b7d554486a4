"""Device commands: boards, build, flash, info, stop."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tinycil.cli.errors import friendly
from tinycil.deploy import emulator
from tinycil.deploy.boards import Board, list_boards, load_board
from tinycil.link.bridge import DeviceLink, NoAnswer, available_ports
from tinycil.deploy.build import build as build_firmware
from tinycil import protocol_spec as spec
from tinycil.deploy.flash import (PERSIST_FLAG, export_for_flash, flash_board, start_emulated,
                           stlink_ports, wait_for_hello)


def _kb(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n // 1024} KB" if n % 1024 == 0 else f"{n / 1024:.1f} KB"


def _usage(used, total) -> str:
    if used is None:
        return "?"
    if total:
        return f"{used:,} / {total:,} bytes ({100.0 * used / total:.1f}%)"
    return f"{used:,} bytes"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


# ---- boards -------------------------------------------------------------------------------------

@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
@friendly
def boards(as_json):
    """List the boards tinycil builds for."""
    catalogue = list_boards()
    if as_json:
        click.echo(json.dumps([b.summary() for b in catalogue], indent=2))
        return
    rows = [["ID", "NAME", "EMULATED", "FLASH", "RAM", "COUNTER", "FLASH WITH"]]
    for b in catalogue:
        rows.append([b.id, b.name, "yes" if b.emulated else "no", _kb(b.flash_bytes),
                     _kb(b.ram_bytes), b.counter,
                     "qemu (tinycil flash starts it)" if b.emulated else ", ".join(b.flash_methods)])
    click.echo(_table(rows))


# ---- build --------------------------------------------------------------------------------------

_PERSIST_HELP = ("Keep the learned state in flash across resets (builds with -DTC_PERSIST=1; "
                 "512 KB of the flash hold the two slots).")


def _build(board: Board, verbose: bool, persist: bool = False, baud: int | None = None):
    click.echo(f"Building firmware for {board.id} ({board.name})"
               + (" with persistence of the learned state" if persist else "")
               + (f" at {baud} baud" if baud else "") + " ...")
    # The firmware's baud rate is the board manifest's unless --baud chose another.
    flags = " ".join(filter(None, [PERSIST_FLAG if persist else None,
                                   f"-DTC_SERIAL_BAUD={baud}" if baud else None]))
    result = build_firmware(board, echo=click.echo if verbose else None,
                            extra_flags=flags or None)
    click.echo(f"Built in {result.seconds:.1f} s: {result.size_line()}")
    return result


@click.command()
@click.option("--board", "-b", "board_id", required=True, help="Board id (see `tinycil boards`).")
@click.option("--persist", is_flag=True, help=_PERSIST_HELP)
@click.option("--verbose", "-v", is_flag=True, help="Show PlatformIO's output.")
@friendly
def build(board_id, persist, verbose):
    """Build the firmware for a board with PlatformIO (offline)."""
    board = load_board(board_id)
    result = _build(board, verbose, persist)
    click.echo(f"ELF: {result.elf}")


# ---- flash --------------------------------------------------------------------------------------

@click.command()
@click.option("--board", "-b", "board_id", required=True, help="Board id (see `tinycil boards`).")
@click.option("--port", "-p", help="Serial port of a real board, checked with HELLO after flashing.")
@click.option("--baud", type=click.IntRange(1200, 4_000_000),
              help="Build the firmware for this baud rate (default: the board's); other commands "
                   "then need the same --baud.")
@click.option("--icount", is_flag=True,
              help="Emulated board: run QEMU with -icount so the counter counts instructions exactly.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path),
              help="A prepared run: export its model into the firmware first (refused, before "
                   "building, when it does not fit the board).")
@click.option("--persist", is_flag=True, help=_PERSIST_HELP)
@click.option("--no-build", is_flag=True, help="Flash the firmware built last instead of building.")
@click.option("--verbose", "-v", is_flag=True, help="Show PlatformIO's output.")
@friendly
def flash(board_id, port, baud, icount, run_dir, persist, no_build, verbose):
    """Build and flash the firmware; for the emulated board, start QEMU in the background."""
    from tinycil.deploy.build import artifacts

    board = load_board(board_id)
    if no_build and (run_dir or persist or baud):
        raise click.UsageError("--no-build flashes the last build as it is: drop "
                               "--run/--persist/--baud, or drop --no-build")
    # Options that cannot apply are refused before anything is exported or built.
    if board.emulated and port:
        raise click.UsageError(f"{board.id} is emulated: tinycil chooses its port; drop --port")
    if icount and not board.emulated:
        raise click.UsageError("--icount applies to the emulated board only")
    if run_dir is not None:
        exported = export_for_flash(board, run_dir, persist=persist)
        mem = exported.memory
        click.echo(f"Exported run {run_dir} for {board.id}: model signature "
                   f"{exported.signature_hex} (planned RAM {mem['ram_used']:,} / "
                   f"{mem['ram_total']:,} bytes, flash {mem['flash_used']:,} / "
                   f"{mem['flash_total']:,} bytes)")
    if no_build:
        elf, binary = artifacts(board)
        if not elf.is_file():
            raise click.ClickException(f"no firmware built for {board.id} yet: drop --no-build")
    else:
        result = _build(board, verbose, persist, baud)
        elf, binary = result.elf, result.bin
    if board.emulated:
        result = start_emulated(board, elf, icount=icount, echo=click.echo)
        _print_hello_line(result.info)
        click.echo(f"The emulator runs in the background: `tinycil info --board {board.id}` to "
                   "ask it again, `tinycil stop` to end it.")
        return
    result = flash_board(board, elf, binary, echo=click.echo)
    click.echo(f"Flashed {board.id}: {result.detail}")
    if baud and baud != board.baudrate:
        click.echo(f"The firmware speaks {baud} baud: pass --baud {baud} to info, stream and "
                   "selftest.")
    ports = [port] if port else stlink_ports()
    if len(ports) == 1:
        click.echo(f"Waiting for the firmware on {ports[0]} ...")
        info = wait_for_hello(ports[0], baud or board.baudrate, timeout=10.0)
        _print_hello_line(info)
    else:
        click.echo("Check it with `tinycil info --board {0} --port PORT`.".format(board.id))


def _print_hello_line(info: dict | None) -> None:
    if info:
        sig = info.get("model_signature") or ""
        model = f"model {sig}" if _has_model(info) else "no model"
        click.echo(f"Device answered: {info.get('board')} build {info.get('build_id')}, "
                   f"protocol v{info.get('protocol_version')}, {model}, session "
                   f"0x{int(info.get('session_id', 0)):08x}")


# ---- info ---------------------------------------------------------------------------------------

def _resolve_port(board_id: str | None, port: str | None) -> tuple[str, int | None, Board | None]:
    """The port to talk to and the board's default baud rate."""
    if port:
        board = load_board(board_id) if board_id else None
        return port, board.baudrate if board else None, board
    if not board_id:
        raise click.UsageError("give --board B (emulated board, or a single ST-LINK attached) or "
                               "--port URL")
    board = load_board(board_id)
    if board.emulated:
        state = emulator.running()
        if state is None or state.board != board.id:
            raise click.ClickException(f"no {board.id} emulator is running: run "
                                       f"`tinycil flash --board {board.id}` first")
        return state.url, board.baudrate, board
    found = stlink_ports()
    if len(found) == 1:
        return found[0], board.baudrate, board
    present = ", ".join(available_ports()) or "none"
    if not found:
        raise click.ClickException(f"no ST-LINK serial port found for {board.id}: plug the board "
                                   f"in or pass --port (ports present: {present})")
    raise click.ClickException(f"several ST-LINK ports found ({', '.join(found)}): pass --port")




def icount_of(board: Board | None, port: str | None) -> bool | None:
    """Whether the emulated board behind the port runs QEMU with -icount (its counter then counts
    instructions exactly); None when that cannot be known (a real board, or a port given by hand)."""
    if board is None or not board.emulated or port:
        return None
    state = emulator.running()
    return bool(getattr(state, "icount", False)) if state is not None else None


def counter_label(kind: str, icount: bool | None) -> str:
    """What the device's counter counts, said truthfully. The emulated board's timer counts
    instructions only when QEMU runs with -icount; otherwise it follows wall time."""
    if kind != "INSTRUCTIONS":
        return {"CYCLES": "CPU cycles (DWT CYCCNT)", "NONE": "none"}.get(kind, kind.lower())
    if icount:
        return "instructions (QEMU -icount: exact, repeatable)"
    if icount is False:
        return ("timer ticks that follow wall time, not instructions (QEMU without -icount: "
                "`tinycil flash --board B --icount` for exact counts)")
    return ("instructions when QEMU runs with -icount; without it, timer ticks that follow wall "
            "time")


_PERSIST_NAMES = {v: k for k, v in spec.PERSIST_STATES.items()}


def _has_model(info: dict) -> bool:
    sig = info.get("model_signature") or ""
    return bool(sig) and set(sig) != {"0"}


def _learned_state(info: dict) -> str:
    state = _PERSIST_NAMES.get(int(info.get("persist", 0)), "UNKNOWN")
    task, seq = info.get("persist_task", 0), info.get("persist_sequence", 0)
    if state == "OFF":
        return "not kept across resets (firmware built without --persist)"
    if state == "EMPTY":
        return "kept in flash; nothing saved yet for this model"
    if state == "RESTORED":
        return f"restored at boot: the state saved after task {task} (save #{seq})"
    if state == "SAVED":
        return f"saved after task {task} (save #{seq})"
    return f"the last load or save failed (persistence status {info.get('persist_error')})"


def format_info(info: dict, icount: bool | None = None) -> str:
    sig = info.get("model_signature") or ""
    has_model = _has_model(info)
    shape = info.get("input_shape") or []
    input_type = str(info.get("input_type_name", "NONE"))
    clock = info.get("clock_hz") or 0
    rows = [
        ("Board", str(info.get("board", "?"))),
        ("Build", str(info.get("build_id", "?"))),
        ("Protocol", f"v{info.get('protocol_version')} (max payload {info.get('max_payload', '?')} bytes)"),
        ("Clock", f"{clock / 1e6:g} MHz"),
        ("Counter", counter_label(str(info.get("counter_kind_name")), icount)),
        ("Model", f"signature {sig}" if has_model else "none (firmware built without a model)"),
        ("Input", f"{input_type.lower()} {list(shape)}" if input_type != "NONE" else "-"),
        ("Classes", f"{info.get('classes_seen', 0)} seen of {info.get('classes_max', 0)}"),
        ("Replay buffer", f"{info.get('buffer_fill', 0)} / {info.get('buffer_capacity', 0)} samples"
                          + (f" ({str(info.get('buffer_store_name', '?')).lower()})" if has_model
                             else "")),
        ("Learned state", _learned_state(info)),
        ("RAM", _usage(info.get("ram_used"), info.get("ram_total"))),
        ("Flash", _usage(info.get("flash_used"), info.get("flash_total"))),
        ("Session", f"0x{int(info.get('session_id', 0)):08x}"),
        ("RX overruns", str(info.get("rx_overruns", 0))),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


@click.command()
@click.option("--board", "-b", "board_id", help="Board id; for the emulated board, finds the running QEMU.")
@click.option("--port", "-p", help="Serial port or URL (/dev/ttyACM0, COM3, socket://127.0.0.1:PORT).")
@click.option("--baud", type=int, help="Baud rate (default: the board's, else 115200).")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait per try.")
@click.option("--json", "as_json", is_flag=True, help="Print INFO as JSON.")
@friendly
def info(board_id, port, baud, timeout, as_json):
    """Ask a device who it is (HELLO) and print its INFO."""
    url, default_baud, board = _resolve_port(board_id, port)
    try:
        with DeviceLink(url, baudrate=baud or default_baud or 115200, timeout=timeout) as link:
            fields = link.hello()
    except NoAnswer as exc:
        if board is not None and board.emulated and not port:
            raise click.ClickException(f"{exc}\nThe emulator runs but its firmware does not "
                                       f"answer: restart it with `tinycil flash --board {board.id}`.")
        raise
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
    if as_json:
        click.echo(json.dumps({"port": url, **fields}, indent=2, default=str))
    else:
        click.echo(f"Port           {url}")
        click.echo(format_info(fields, icount_of(board, port)))


# ---- stop ---------------------------------------------------------------------------------------

@click.command()
@friendly
def stop():
    """End the emulated board started by `tinycil flash`."""
    state = emulator.stop()
    if state is None:
        click.echo("No emulator is running.")
    else:
        click.echo(f"Stopped QEMU (pid {state.pid}, {state.board} at {state.url}).")


COMMANDS = [boards, build, flash, info, stop]
