"""`tinycil prepare` on digits with tiny settings: a complete run folder, then the host reference of
the device run (simulate) on it."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tinycil.cli.prepare import prepare_command

pytestmark = pytest.mark.slow

N_TASKS = 5
EPOCHS = 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "digits-run"
    result = CliRunner().invoke(prepare_command, [
        "--dataset", "digits", "--tasks", str(N_TASKS), "--known", "1", "--epochs", str(EPOCHS),
        "--distill-iters", "10", "--seed", "0", "--class-order", "9,8,7,6,5,4,3,2,1,0",
        "-o", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for step in ("[1/7] loading digits", "[4/7] distilling", "[7/7] prepared", "host reference",
                 # the default cut is the memory plan's: the whole digits cnn2d fits the board
                 "trainable layers: 4 of 4, model widths x 1 "):
        assert step in result.output
    return out


def test_class_order_and_cut_are_recorded(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["class_order"] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert config["task_classes"] == [[9, 8], [7, 6], [5, 4], [3, 2], [1, 0]]
    assert config["tail_layers"] == 4 and "fits mps2_an500" in config["cut_reason"]
    # the versions the run was made with: another TensorFlow or numpy trains another model
    import keras
    import numpy

    assert config["software"]["keras"] == keras.__version__
    assert config["software"]["numpy"] == numpy.__version__
    from tinycil import software

    assert config["cpu"] == software.cpu()


@pytest.fixture(scope="module")
def inputs(run_dir):
    from tinycil.learn.simulate import RunInputs

    return RunInputs(run_dir)


def test_prepare_writes_a_complete_run_folder(run_dir):
    from tinycil.runfolder import RunFolder

    run = RunFolder(run_dir)
    for path in (run.config_path, run.plan_path, run.model_path, run.results_path,
                 run_dir / "backbone.tflite"):
        assert path.is_file(), path
    assert run.buffer_tasks() == list(range(N_TASKS))
    cfg = run.read_config()
    for key in ("dataset", "data_dir", "resize", "seed", "task_classes", "known_tasks",
                "buffer_fraction", "distill", "family", "width_policy", "tail_layers", "training",
                "board", "input_quantization", "latent_quantization"):
        assert key in cfg, key
    assert cfg["training"]["epochs"] == EPOCHS
    assert cfg["task_classes"] == [[9, 8], [7, 6], [5, 4], [3, 2], [1, 0]]  # --class-order


def test_plan_grows_only_the_tail_and_never_shrinks(run_dir):
    from tinycil.runfolder import RunFolder

    plan = RunFolder(run_dir).read_plan()
    assert len(plan) == N_TASKS
    assert [p["learned_on"] for p in plan] == ["host"] + ["device"] * (N_TASKS - 1)
    assert [p["outputs"] for p in plan] == [2, 4, 6, 8, 10]
    assert plan[-1]["seen_classes"] == list(range(9, -1, -1))  # --class-order 9,8,...,0
    backbone = [p["widths"][:-len(p["tail_widths"])] for p in plan]
    assert all(b == backbone[0] for b in backbone)  # frozen after the known task
    for a, b in zip(plan, plan[1:]):
        assert all(y >= x for x, y in zip(a["widths"], b["widths"]))
        assert b["outputs"] > a["outputs"]
    assert plan[-1]["tail_widths"][-1] > plan[0]["tail_widths"][-1]  # the tail does grow
    for p in plan[1:]:
        assert p["device_flops_per_sample"]["total"] > 0


def test_buffers_hold_one_percent_class_balanced_int8(run_dir):
    from tinycil.datasets import load_dataset
    from tinycil.learn.quantize import quantize_inputs
    from tinycil.runfolder import RunFolder
    from tinycil.learn.tasks import task_subset

    run = RunFolder(run_dir)
    cfg = run.read_config()
    ds = load_dataset("digits")
    iq = cfg["input_quantization"]
    total = 0
    for t, classes in enumerate(cfg["task_classes"]):
        _, y = task_subset(ds.x_train, ds.y_train, classes)
        buf = run.load_buffer(t)
        want = max(len(classes), round(0.01 * len(y)))
        assert len(buf["x"]) == len(buf["y"]) == len(buf["x_int8"]) == want
        assert set(np.unique(buf["y"])) == set(classes)  # class ids, every class present
        assert buf["x_int8"].dtype == np.int8
        assert buf["x_int8"].shape[1:] == buf["x"].shape[1:] == ds.input_shape
        assert np.array_equal(buf["x_int8"], quantize_inputs(buf["x"], iq["scale"], iq["zero_point"]))
        total += want
    assert cfg["buffer"]["samples"] == total
    assert cfg["buffer"]["bytes"] == total * (int(np.prod(ds.input_shape)) + 1)


def test_the_backbone_tflite_runs_and_matches_the_float_model(run_dir, inputs):
    from tinycil.learn.train import predict

    model = inputs.run.load_model()
    x8, lat, y = inputs.test[0]
    assert lat.shape == (len(y), int(np.prod(inputs.config["latent_shape"])))
    int8_pred = np.argmax(inputs.tail.logits(lat), axis=1)
    from tinycil.datasets import load_dataset
    from tinycil.learn.tasks import task_subset

    ds = load_dataset("digits")
    x, _ = task_subset(ds.x_test, ds.y_test, inputs.tasks[0])
    float_pred = predict(model, x, 2)
    assert np.mean(int8_pred == float_pred) > 0.9
    units = np.array([inputs.tasks[0].index(int(c)) for c in y])  # output unit k: k-th class
    assert np.mean(int8_pred == units) > 0.9  # known task learned


def test_simulate_is_deterministic_and_recorded(run_dir, inputs):
    from tinycil.runfolder import RunFolder
    from tinycil.learn.simulate import simulate_run

    a = simulate_run(run_dir, inputs=inputs)
    b = simulate_run(run_dir, inputs=inputs)
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    recorded = RunFolder(run_dir).read_results()
    assert recorded["method"]["accuracy_matrix"] == a["accuracy_matrix"]  # a fresh load agrees
    assert recorded["tasks"] == inputs.tasks and recorded["known_tasks"] == 1
    R = a["accuracy_matrix"]
    assert all(R[i][j] is None for i in range(N_TASKS) for j in range(i + 1, N_TASKS))
    assert a["train_flops"] > inputs.config["host"]["train_flops"] > 0
    assert a["buffer"]["samples"] == inputs.config["buffer"]["samples"]


def test_simulate_learns_the_first_field_task(run_dir):
    from tinycil.runfolder import RunFolder

    R = RunFolder(run_dir).read_results()["method"]["accuracy_matrix"]
    # after task 1 the model chooses among 4 classes: chance is 0.25 on task 1's test samples
    assert R[1][1] > 0.6
    # replay keeps the known task alive (chance is 0.25); with every layer trainable on the
    # device (the auto cut on digits) the features drift more than behind a frozen prefix
    assert R[1][0] > 0.3
    assert R[-1][-1] > 0.5


def test_growth_in_simulate_changes_no_old_logit(inputs):
    from tinycil.learn.prng import Prng
    from tinycil.learn.simulate import Tail

    tail = inputs.tail.copy()
    lat = np.concatenate([inputs.test[j][1] for j in range(N_TASKS)])
    for t in range(1, N_TASKS):
        before = tail.logits(lat)
        entry = inputs.plan[t]
        tail.grow(entry["tail_widths"], entry["outputs"], Prng.for_task(inputs.seed, t))
        after = tail.logits(lat)
        assert after.shape[1] == entry["outputs"]
        if isinstance(tail, Tail):
            # bit for bit: new units add exact zeros to the old logits' sums
            assert np.array_equal(after[:, :before.shape[1]], before)
        else:  # convolutions train too: numpy's matrix products may sum in another order
            np.testing.assert_allclose(after[:, :before.shape[1]], before, rtol=1e-5, atol=1e-5)
        assert np.all(after[:, before.shape[1]:] == 0)
        assert tail.hidden_widths == entry["tail_widths"]


def test_prepare_refuses_bad_settings(tmp_path):
    result = CliRunner().invoke(prepare_command, ["--dataset", "digits", "--known", "5", "-o",
                                                  str(tmp_path / "x")])
    assert result.exit_code != 0 and "--known" in result.output
    result = CliRunner().invoke(prepare_command, ["--dataset", "digits", "--trainable", "5",
                                                  "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--trainable 5" in result.output
    assert "at most 4" in result.output and "Traceback" not in result.output
    from tinycil.learn.prepare import PrepareError, prepare_run

    with pytest.raises(PrepareError, match="--frozen-width known applies to tinycil's model "
                                           "families; your own model"):
        prepare_run("digits", tmp_path / "y", model_file=tmp_path / "mine.keras",
                    frozen_width="known", progress=False)
    with pytest.raises(PrepareError, match="--frozen-width must be one of auto, final, known"):
        prepare_run("digits", tmp_path / "y", frozen_width="wide", progress=False)
    result = CliRunner().invoke(prepare_command, ["--dataset", "digits", "--trainable", "none",
                                                  "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "'auto'" in result.output
