"""A replay buffer of latents (`--replay-store latents`): the export keeps the frozen backbone's
int8 output of every buffered sample instead of the sample, the runtime replays it without the
backbone, and training is the very same as with a buffer of inputs.

Built on the session's quick digits run (tests/test_runtime_twin.py), exported a second time with
latents into a folder of this test; both exports run in the host twin (the firmware's runtime
built for the host)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from test_runtime_twin import prepared_digits_run

pytestmark = pytest.mark.slow

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(run folder exported with inputs, folder of the same run exported with latents)."""
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.export import export_model, load_export_model

    run = prepared_digits_run(tmp_path_factory)
    latents_dir = tmp_path_factory.mktemp("latents-export")
    export_model(load_export_model(run, "latents"), load_board("mps2_an500"), [latents_dir])
    return run, latents_dir


def test_exported_latents_are_what_the_device_backbone_makes_of_the_samples(runs):
    from tinycil.deploy.export import load_export_model
    from tinycil.deploy.twin import Twin

    run, _ = runs
    inputs = load_export_model(run, "inputs")
    latents = load_export_model(run, "latents")
    assert latents.buffer_x.shape == (len(inputs.buffer_y), inputs.latent_size)
    assert np.array_equal(latents.buffer_y, inputs.buffer_y)
    assert np.array_equal(latents.buffer_x, Twin(run).backbone(inputs.buffer_x))
    # the memory plan counts a buffered sample at its stored size, in flash and in RAM
    fp_in, fp_lat = inputs.footprint(), latents.footprint()
    assert fp_in.buffer_sample_bytes == inputs.input_size == 64
    assert fp_lat.buffer_sample_bytes == inputs.latent_size < 64
    # and the two exports are different models to the device: the signature tells them apart
    from tinycil.deploy.export import signature
    assert signature(inputs) != signature(latents)


def test_training_with_latents_is_the_same_as_with_inputs(runs):
    """Every field task: the same accuracy matrix and bit-identical tail weights, since the
    replayed latents are exactly what the backbone makes of the replayed inputs."""
    from tinycil.learn.simulate import RunInputs
    from tinycil.deploy.twin import Twin, run_device_procedure

    run, latents_dir = runs
    inp = RunInputs(run)
    with_inputs, with_latents = Twin(run), Twin(model_dir=latents_dir)
    # what INFO reports: TC_BUFFER_STORES_* of the protocol
    assert (with_inputs.describe()["buffer_store"], with_latents.describe()["buffer_store"]) == (0, 1)
    assert with_latents.describe()["buffer_fill"] == with_inputs.describe()["buffer_fill"]
    R_inputs = run_device_procedure(with_inputs, inp)
    R_latents = run_device_procedure(with_latents, inp)
    assert R_latents == R_inputs
    assert any(v is not None and v > 0 for row in R_latents for v in row)
    for (wi, bi), (wl, bl) in zip(with_inputs.tail_params(), with_latents.tail_params()):
        assert np.array_equal(wi, wl) and np.array_equal(bi, bl)
    # the field tasks' buffer samples arrived as inputs and were kept: the buffer filled up alike
    assert with_latents.describe()["buffer_fill"] == with_inputs.describe()["buffer_fill"]


def test_a_full_latent_buffer_refuses_more_samples_and_keeps_what_it_has(runs):
    from tinycil.deploy.twin import Twin, TwinError

    run, latents_dir = runs
    twin = Twin(model_dir=latents_dir)
    d = twin.describe()
    room = d["buffer_capacity"] - d["buffer_fill"]
    twin.begin_task([2, 3])
    x = np.zeros((room + 1, *twin.input_shape), np.int8)
    with pytest.raises(TwinError):
        twin.add_buffer_samples(x, np.full(room + 1, 2))
    assert twin.describe()["buffer_fill"] == d["buffer_fill"]
    twin.add_buffer_samples(x[:room], np.full(room, 2))
    assert twin.describe()["buffer_fill"] == d["buffer_capacity"]


def test_host_and_firmware_agree_on_the_model_format():
    from tinycil.deploy.export import BUFFER_STORES, FORMAT_VERSION

    header = (FIRMWARE / "lib" / "runtime" / "tc_model.h").read_text()
    assert int(re.search(r"#define TC_MODEL_FORMAT_VERSION (\d+)", header).group(1)) == FORMAT_VERSION
    # the store codes are the protocol's (INFO reports them), from its generated header
    assert '#include "tc_protocol_spec.h"' in header
    generated = (FIRMWARE / "lib" / "protocol" / "tc_protocol_spec.h").read_text()
    codes = {name.lower(): int(v) for name, v in
             re.findall(r"#define TC_BUFFER_STORES_(\w+) (\d+)", generated)}
    assert codes == {name: i for i, name in enumerate(BUFFER_STORES)}


def test_prepare_refuses_an_unknown_replay_store(tmp_path):
    from tinycil.learn.prepare import PrepareError, prepare_run

    with pytest.raises(PrepareError, match="--replay-store must be inputs or latents"):
        prepare_run("digits", tmp_path / "run", replay_store="activations", progress=False)


def test_the_command_line_carries_the_store_into_the_export(tmp_path):
    """`tinycil prepare --replay-store latents` records it; `tinycil export` then keeps latents."""
    import json

    from click.testing import CliRunner

    from tinycil.cli import main

    run = tmp_path / "run"
    runner = CliRunner()
    prepared = runner.invoke(main, ["prepare", "--dataset", "digits", "--quick", "--no-simulate",
                                    "--replay-store", "latents", "-o", str(run)])
    assert prepared.exit_code == 0, prepared.output
    config = json.loads((run / "config.json").read_text())
    assert config["replay_store"] == "latents"
    latent_size = int(np.prod(config["latent_shape"]))
    assert config["buffer"]["bytes"] == config["buffer"]["samples"] * (latent_size + 1)
    exported = runner.invoke(main, ["export", str(run), "--board", "mps2_an500", "--host-only"])
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["buffer"]["store"] == "latents"
    assert manifest["buffer"]["sample_bytes"] == latent_size
    assert "1,  // buffer_store: latents" in (run / "export" / "model_data.cpp").read_text()
    assert "replay buffer of latents" in exported.output
    # and back: the export's option overrides what the run was prepared with
    again = runner.invoke(main, ["export", str(run), "--board", "mps2_an500", "--host-only",
                                 "--replay-store", "inputs"])
    assert again.exit_code == 0, again.output
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["buffer"]["store"] == "inputs"
    assert manifest["buffer"]["sample_bytes"] == int(np.prod(config["input_shape"]))
