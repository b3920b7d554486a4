"""End to end on the emulated board with a trainable convolution: digits, the last three weight
layers of the cnn2d trainable (conv2, its pooling, dense1, logits) behind a frozen int8 conv1.
Real PlatformIO build, QEMU, the serial protocol; the device's accuracy matrix equals the host
twin's (the same C++ on the host) and the numpy reference's in every entry."""

import os
import shutil

import numpy as np
import pytest

from helpers import copy_firmware_project

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm"),
]


@pytest.fixture(scope="module")
def conv_run(root, tmp_path_factory):
    from tinycil.cli.run import run_end_to_end

    project = copy_firmware_project(root, tmp_path_factory.mktemp("project"))
    os.environ["TINYCIL_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    run_dir = tmp_path_factory.mktemp("runs") / "digits-conv"
    lines = []
    results = run_end_to_end("digits", "mps2_an500", run_dir, epochs=3, distill_iters=10,
                             root=project, progress=False, echo=lines.append,
                             prepare_kwargs={"tail_layers": 3})
    return {"run_dir": run_dir, "results": results, "lines": lines}


def test_the_device_trains_a_convolution(conv_run):
    import json

    manifest = json.loads((conv_run["run_dir"] / "export" / "manifest.json").read_text())
    # conv2 grows on the device: its output channels follow the plan from task to task
    conv_out = [step["out"][0] for step in manifest["plan"]]
    assert conv_out == sorted(conv_out) and conv_out[-1] > conv_out[0]
    assert manifest["backbone_layers"][0] == "CONV_2D"  # conv1 stays frozen in int8


def test_device_equals_the_twin_in_every_entry(conv_run):
    results = conv_run["results"]
    assert "twin" in results, "the host twin did not run (no host C++ compiler?)"
    assert results["device"]["accuracy_matrix"] == results["twin"]["accuracy_matrix"]


def test_device_equals_the_numpy_reference(conv_run):
    """The numpy simulation runs the kernels' order too: the same accuracy in every entry."""
    dev = np.array(conv_run["results"]["device"]["accuracy_matrix"], dtype=float)
    sim = np.array(conv_run["results"]["method"]["accuracy_matrix"], dtype=float)
    mask = ~np.isnan(sim)
    assert np.array_equal(dev[mask], sim[mask]), (dev, sim)
