"""`tinycil prepare`: the host half of a device run.

TensorFlow is imported inside the command only.
"""

from __future__ import annotations

from pathlib import Path

import click

from tinycil.cli.errors import check_output_folder, friendly
from tinycil.cli.options import (check_model_file_option, device_training_options,
                                 model_file_option, scenario_options, split_resize)


@click.command("prepare")
@scenario_options
@device_training_options
@model_file_option
@click.option("--board", default=None,
              help="Board the run is meant for (recorded in config.json); a model that cannot "
                   "fit it is refused before training.")
@click.option("--simulate/--no-simulate", default=True, show_default=True,
              help="Run the host reference of the device's training and store it in results.json.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (default runs/<dataset>-device).")
@friendly(also=(ValueError,))
def prepare_command(dataset, data_dir, resize, n_tasks, known, buffer_fraction, seed, class_order,
                    family, tail_layers, frozen_width,
                    board, epochs, lr, momentum, batch_new, batch_replay, clip_norm, balance_steps,
                    asymmetric_ce, replay_shift, head_weight, replay_store, distill_method,
                    distill_iters, max_train, max_test, quick, model_file, simulate, output):
    """The host half of a device run: train the model on the known tasks, quantise its backbone to
    int8, distil every task to a small buffer, and write the growth plan into a run folder."""
    from tinycil.cli.quiet import import_tensorflow

    import_tensorflow()
    from tinycil.learn.prepare import prepare_run
    from tinycil.runfolder import default_run_dir

    out = output or default_run_dir(dataset, "device")
    check_output_folder(out)
    check_model_file_option(model_file)
    resize, keep_size = split_resize(resize)
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.cut import cut_chooser, sized_cut_chooser
    from tinycil.deploy.modelcheck import check_user_model

    check_model = None
    if board is not None:
        from tinycil.cli.fit import board_fit_check

        target = load_board(board)
        check_model, board = board_fit_check(target), target.id
    elif tail_layers == "auto" and (model_file is None or model_file.suffix.lower() != ".tflite"):
        click.echo("--trainable auto without --board: planning for mps2_an500 (the STM32F746's "
                   "320 KB RAM budget)")
    planned_for = load_board(board or "mps2_an500")
    choose_cut, choose_sized_cut = cut_chooser(planned_for), sized_cut_chooser(planned_for)
    config = prepare_run(
        dataset, out, n_tasks=n_tasks, known=known, buffer_fraction=buffer_fraction, seed=seed,
        family=family, tail_layers=tail_layers, resize=resize,
        keep_size=keep_size, data_dir=data_dir, board=board, epochs=epochs, lr=lr,
        momentum=momentum, batch_new=batch_new, batch_replay=batch_replay, clip_norm=clip_norm,
        balance_steps=balance_steps, asymmetric_ce=asymmetric_ce, replay_shift=replay_shift,
        discriminant_weight=head_weight, replay_store=replay_store, distill=distill_method, distill_iters=distill_iters, quick=quick,
        max_train=max_train, max_test=max_test, echo=click.echo, check_model=check_model,
        class_order=class_order, choose_cut=choose_cut, model_file=model_file,
        frozen_width=frozen_width, choose_sized_cut=choose_sized_cut,
        check_user_model=check_user_model)
    if simulate:
        from tinycil.learn.simulate import record_simulation

        result = record_simulation(out, progress=True, echo=click.echo)
        rows = [" ".join("  -  " if a is None else f"{a:.3f}" for a in row)
                for row in result["accuracy_matrix"]]
        click.echo("host reference of the device run (accuracy matrix, rows: after task i):")
        click.echo("\n".join("  " + r for r in rows))
        click.echo(f"final average accuracy {result['final_avg_accuracy']:.3f}")
    click.echo(f"run folder {out}: {config['buffer']['samples']} buffer samples "
               f"({config['buffer']['bytes']} bytes); next: `tinycil flash --run {out} --board "
               f"{board or 'B'}`")
