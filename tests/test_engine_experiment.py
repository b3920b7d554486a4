"""The host study end to end on the real digits data set, through the CLI, with tiny settings."""

import json

import pytest
from click.testing import CliRunner

from tinycil.cli import main
from tinycil.learn.metrics import RESULT_KEYS

RUNS = ("naive", "random_replay", "fixed_size", "joint")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    res = CliRunner().invoke(main, ["experiment", "--dataset", "digits", "--tasks", "5", "--epochs", "3",
                                    "--distill-iters", "5", "--no-progress", "-o", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out, res.output


@pytest.mark.slow
def test_experiment_writes_a_results_file_that_follows_the_contract(study):
    out, output = study
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "digits" and results["board"] is None and results["seed"] == 0
    assert results["known_tasks"] == 1
    assert results["tasks"] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert set(results["baselines"]) == set(RUNS)
    for r in [results["method"]] + [results["baselines"][n] for n in RUNS]:
        assert tuple(r) == RESULT_KEYS
        R = r["accuracy_matrix"]
        assert len(R) == 5 and all(len(row) == 5 for row in R)
        for i in range(5):
            for j in range(5):
                assert (R[i][j] is None) == (j > i)
                if j <= i:
                    assert 0.0 <= R[i][j] <= 1.0
        assert 0.0 <= r["final_avg_accuracy"] <= 1.0
        assert r["train_flops"] > 0
    base = results["baselines"]
    # Fine-tuning with no replay forgets; joint training on everything hardly does.
    assert base["naive"]["forgetting"] > base["joint"]["forgetting"] + 0.3
    assert base["naive"]["final_avg_accuracy"] < base["joint"]["final_avg_accuracy"]
    # The 1% buffers: distilled and random have the same size, about 1% of the training data.
    assert results["method"]["buffer"] == base["random_replay"]["buffer"] == base["fixed_size"]["buffer"]
    assert 0.005 < results["method"]["buffer"]["fraction"] < 0.03
    assert base["naive"]["buffer"]["samples"] == 0 and base["joint"]["buffer"]["fraction"] == 1.0
    # The adaptive model spends fewer FLOPs than the final-size one on the same samples.
    assert results["method"]["train_flops"] < 0.5 * base["fixed_size"]["train_flops"]
    assert (out / "summary.md").read_text().count("|") > 20
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "config.json").is_file() and (out / "plan.json").is_file()
    # the processor is recorded beside the versions: its extensions decide TensorFlow's kernels
    from tinycil import software

    assert json.loads((out / "config.json").read_text())["cpu"] == software.cpu()
    assert "naive fine-tuning" in output and "FLOPs / fixed" in output


@pytest.mark.slow
def test_report_re_renders_from_results_json(study):
    out, _ = study
    (out / "summary.md").unlink()
    (out / "plot.png").unlink()
    res = CliRunner().invoke(main, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert "joint training" in res.output and "100%" in res.output  # fixed_size's own FLOPs ratio
    assert (out / "summary.md").is_file() and (out / "plot.png").is_file()


def test_report_of_a_missing_run_says_what_to_do(tmp_path):
    res = CliRunner().invoke(main, ["report", str(tmp_path / "nothing")])
    assert res.exit_code != 0 and "tinycil experiment" in res.output


def test_experiment_refuses_a_bad_task_count(tmp_path):
    res = CliRunner().invoke(main, ["experiment", "--dataset", "digits", "--tasks", "3", "--no-progress",
                                    "-o", str(tmp_path / "r")])
    assert res.exit_code != 0 and "choose --tasks" in res.output


def test_experiment_refuses_a_malformed_resize(tmp_path):
    res = CliRunner().invoke(main, ["experiment", "--dataset", "digits", "--resize", "big",
                                    "-o", str(tmp_path / "r")])
    assert res.exit_code != 0 and "HxW" in res.output


def test_an_ablation_reuses_the_buffers_of_its_seed(monkeypatch):
    # The rows of an ablation change only the training: the second call distills nothing and
    # trains on the very same buffers.
    import tinycil.learn.distill as distill
    from tinycil.learn.experiment import run_experiment

    calls = []
    real = distill.distill_task
    monkeypatch.setattr(distill, "distill_task", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = {}
    first = run_experiment("digits", n_tasks=2, epochs=1, distill_iters=2, runs=("method",),
                           progress=False, buffer_cache=cache)
    assert len(calls) == 2 and len(cache) == 1
    second = run_experiment("digits", n_tasks=2, epochs=1, distill_iters=2, runs=("method",),
                            progress=False, buffer_cache=cache, train_options={"asymmetric_ce": False})
    assert len(calls) == 2
    assert second["details"]["distill_seconds_per_task"] == first["details"]["distill_seconds_per_task"]
    assert first["config"]["training"]["asymmetric_ce"] and not second["config"]["training"]["asymmetric_ce"]


def test_stored_logits_cost_one_forward_pass_per_buffer_sample_and_change_the_training():
    # Every task's distilled samples get one forward pass when they join the buffer (the last
    # task's too: a device would store them for the tasks after it); the FLOPs count them.
    from tinycil.learn.experiment import run_experiment
    from tinycil.learn.models import build_model, count_cost

    cache = {}
    runs = {w: run_experiment("digits", n_tasks=2, epochs=1, distill_iters=2, runs=("method",), progress=False,
                              buffer_cache=cache, train_options={"replay_logits_weight": w, "balance_steps": 5})
            for w in (0.0, 0.1)}
    extra = runs[0.1]["method"]["train_flops"] - runs[0.0]["method"]["train_flops"]
    info = runs[0.0]["details"]["runs"]["method"]
    widths, per_task = info["widths"], runs[0.0]["method"]["buffer"]["samples"] / 2
    fwd = sum(count_cost(build_model("cnn2d", (8, 8, 1), n, w))["fwd_flops"]
              for w, n in zip(widths, info["outputs"]))
    assert abs(extra - per_task * fwd) < 1e-6 * extra
    assert runs[0.1]["method"]["accuracy_matrix"] != runs[0.0]["method"]["accuracy_matrix"]
