"""`tinycil export RUN --board B`: the run's model as C arrays in firmware/generated/."""

from __future__ import annotations

from pathlib import Path

import click

from tinycil.cli.errors import friendly
from tinycil.protocol_spec import BUFFER_STORE_NAMES


@click.command("export")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--board", "-b", required=True, help="Board id (see `tinycil boards`).")
@click.option("--host-only", is_flag=True,
              help="Write only RUN/export/ (for the host twin), not firmware/generated/.")
@click.option("--replay-store", type=click.Choice(BUFFER_STORE_NAMES), default=None,
              help="What the device's replay buffer keeps (default: what the run was prepared "
                   "with).")
@click.option("--into", "into", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write model_data.h and model_data.cpp into this folder: the include "
                   "folder of your own PlatformIO project that uses the learner library "
                   "(for example its generated/).")
@friendly
def export_command(run: Path, board: str, host_only: bool, replay_store: str | None,
                   into: Path | None) -> None:
    """Export a prepared run (int8 backbone, float32 tail, growth plan, replay buffer) for BOARD,
    after checking that it fits the board's RAM and flash."""
    from tinycil.deploy.export import export_run

    result = export_run(run, board, firmware=not host_only, buffer_store=replay_store)
    mem = result.memory
    click.echo(f"exported {run} for {result.board}: signature {result.signature_hex}, replay "
               f"buffer of {result.manifest['buffer']['store']}")
    click.echo(f"  RAM   {mem['ram_used']:>8} of {mem['ram_total']} bytes (planned; the linker "
               f"checks the final image)")
    click.echo(f"  flash {mem['flash_used']:>8} of {mem['flash_total']} bytes")
    if into is not None:
        import shutil

        from tinycil.deploy.export import GENERATED_FILES
        from tinycil.runfolder import EXPORT_DIR

        into.mkdir(parents=True, exist_ok=True)
        for name in GENERATED_FILES:
            shutil.copyfile(run / EXPORT_DIR / name, into / name)
            result.files.append(into / name)
    for path in result.files:
        click.echo(f"  wrote {path}")
    click.echo(f"  manifest {result.manifest_path}")


COMMANDS = [export_command]
