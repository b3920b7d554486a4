"""`tinycil check-model FILE`: will the device run this model? Layer by layer, before any training."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("check-model")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
def check_model_command(model: Path) -> None:
    """Check a Keras model (.keras, .h5) or a full-int8 .tflite frozen part against what the
    device runtime runs; every layer it cannot run is named with its type and the supported list."""
    from tinycil.cli.quiet import import_tensorflow

    import_tensorflow()
    from tinycil.deploy.modelcheck import ModelCheckError, check_model_file

    try:
        report = check_model_file(model)
    except ModelCheckError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{model}: {report.format} model, input {report.input_shape}, "
               f"{report.outputs} outputs, {len(report.layers)} layers - all run on the device")
    for note in report.notes:
        click.echo(f"  {note}")
    if report.notes:
        click.echo("  as the device runs it:")
    for name, kind in report.layers:
        click.echo(f"  {name:<40} {kind}")


COMMANDS = [check_model_command]
