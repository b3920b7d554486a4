"""The host study's split of the accuracy gap into learning accuracy and drop."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _host_study():
    spec = importlib.util.spec_from_file_location("host_study", ROOT / "benchmarks" / "host_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(matrix):
    return {"accuracy_matrix": matrix, "final_avg_accuracy": sum(matrix[-1]) / len(matrix[-1])}


def test_learning_and_drop_add_up_to_the_final_accuracy():
    hs = _host_study()
    method = [[0.9, None, None], [0.7, 0.8, None], [0.6, 0.7, 0.5]]
    fixed = [[1.0, None, None], [0.9, 0.9, None], [0.8, 0.8, 0.9]]
    seed = {"method": _result(method), "baselines": {"fixed_size": _result(fixed)}}
    g = hs.gap_sources([seed])
    assert g["method"]["learning_per_task"] == pytest.approx([0.9, 0.8, 0.5])
    assert g["method"]["learning"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    assert g["method"]["drop"] == pytest.approx(((0.9 - 0.6) + (0.8 - 0.7)) / 2)
    for run in ("method", "fixed_size"):
        r = seed["method"] if run == "method" else seed["baselines"]["fixed_size"]
        final = g[run]["learning"] - 2 / 3 * g[run]["drop"]
        assert final == pytest.approx(r["final_avg_accuracy"])
    # Two seeds: the mean of each.
    g2 = hs.gap_sources([seed, {"method": _result(fixed), "baselines": {"fixed_size": _result(method)}}])
    assert g2["method"]["learning"] == pytest.approx((g["method"]["learning"] + g["fixed_size"]["learning"]) / 2)


def test_the_markdown_has_one_row_per_data_set():
    hs = _host_study()
    seed = {"method": _result([[0.9, None], [0.7, 0.8]]), "baselines": {"fixed_size": _result([[1.0, None], [0.9, 0.9]])}}
    study = {"datasets": {"a": {"per_seed": [seed]}, "b": {"per_seed": [seed, seed]}}}
    lines = hs.gap_sources_markdown(study)
    rows = [line for line in lines if line.startswith("| a |") or line.startswith("| b |")]
    assert len(rows) == 2
    assert "| a | 85.0 | 95.0 | - | 20.0 | 10.0 | - | -10.0, -10.0 |" in rows[0]
    assert not any("distance to joint training" in line for line in lines)  # no joint run, no split


def test_the_distance_to_joint_training_splits_into_learning_and_forgetting():
    """final = learning - (T-1)/T x drop, so the fixed model's distance to joint training is its
    learning shortfall plus (T-1)/T x its drop beyond joint training's, exactly."""
    hs = _host_study()
    fixed = [[0.9, None, None], [0.6, 0.8, None], [0.5, 0.6, 0.7]]
    joint = [[1.0, None, None], [0.9, 0.9, None], [0.9, 0.8, 0.9]]
    seed = {"method": _result(fixed), "baselines": {"fixed_size": _result(fixed), "joint": _result(joint)}}
    g = hs.gap_sources([seed])
    learning, forgetting = hs.joint_split(g)
    assert learning == pytest.approx((1.0 + 0.9 + 0.9) / 3 - (0.9 + 0.8 + 0.7) / 3)
    assert forgetting == pytest.approx(2 / 3 * (((0.9 - 0.5) + (0.8 - 0.6)) / 2 - ((1.0 - 0.9) + (0.9 - 0.8)) / 2))
    distance = _result(joint)["final_avg_accuracy"] - _result(fixed)["final_avg_accuracy"]
    assert learning + forgetting == pytest.approx(distance)
    lines = hs.gap_sources_markdown({"datasets": {"a": {"per_seed": [seed]}}})
    assert "| a | 80.0 | 80.0 | 93.3 | 30.0 | 30.0 | 10.0 | +0.0, +0.0, +0.0 |" in lines
    assert f"a {100 * distance:.1f} points: 13.3 learning, 13.3 forgetting" in lines[-1]
    # Fashion-MNIST's bar line, when short, says where the fixed model's distance to joint lies
    agg = {run: {"final_avg_accuracy": {"mean": r["final_avg_accuracy"], "std": 0.0}} for run, r in
           (("method", seed["method"]), ("fixed_size", seed["method"]), ("joint", _result(joint)))}
    bar = hs.fashion_bar_markdown({"datasets": {"fashion-mnist": {"seeds": [0], "aggregate": agg,
                                                                  "per_seed": [seed]}}}, None)[1]
    assert f"Of the fixed model's {100 * distance:.1f} points below joint training, 13.3 are learning" in bar
    # a study whose runs lack joint training has no split
    assert hs.joint_split(hs.gap_sources([{"method": _result(fixed),
                                           "baselines": {"fixed_size": _result(fixed)}}])) is None


@pytest.mark.parametrize("argv, words", [
    (["--ablation", "--rows", "99"], "no ablation row 99"),
    (["--ablation", "--datasets", "nosuch"], "unknown data set(s) nosuch"),
    (["--datasets", "digits", "--seeds", "0", "-3"], "seeds must be 0 or more, got -3"),
])
def test_bad_rows_and_data_sets_get_one_line_not_a_traceback(argv, words, tmp_path, capsys):
    hs = _host_study()
    with pytest.raises(SystemExit) as exit_info:
        hs.main(argv + ["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing run, nothing written


def test_a_damaged_ablation_file_stops_the_run_in_one_line_before_anything_runs(tmp_path, capsys):
    hs = _host_study()
    damaged = tmp_path / "host_study_ablation.json"
    damaged.write_text("{broken")
    for argv in (["--ablation", "--rows", "0"], ["--datasets", "digits"]):
        with pytest.raises(SystemExit) as exit_info:
            hs.main(argv + ["--seeds", "0", "--out", str(tmp_path)])
        assert exit_info.value.code == 2
        assert "cannot be read" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["host_study_ablation.json"]
        assert damaged.read_text() == "{broken"  # left as it was


def test_an_ablation_row_can_scale_both_models_widths():
    """width_scale multiplies the final widths and keeps the schedule; other rows keep the family's."""
    from tinycil.learn.models import DEFAULT_WIDTHS
    from tinycil.learn.sizing import WidthPolicy

    hs = _host_study()
    wide = hs.row_policy("digits", {"width_policy": {"width_scale": 2}, "defaults": True})
    assert wide.full_widths == tuple(2 * w for w in DEFAULT_WIDTHS["cnn2d"])
    plain = WidthPolicy(DEFAULT_WIDTHS["cnn2d"])
    assert (wide.min_fraction, wide.power, wide.schedule) == (plain.min_fraction, plain.power, plain.schedule)
    narrow_start = hs.row_policy("digits", {"width_policy": {"min_fraction": 0.5}})
    assert narrow_start.full_widths == plain.full_widths and narrow_start.min_fraction == 0.5
    assert hs.row_policy("digits", {"defaults": True}) is None
    assert "width_scale" not in hs.row_options({"width_policy": {"width_scale": 2}, "defaults": True})
    # A row's buffer size goes to run_experiment, not to TrainConfig.
    assert "buffer_fraction" not in hs.row_options({"buffer_fraction": 0.05, "defaults": True})
    # ... and so does a row's epoch count (TrainConfig would take it, for every data set alike).
    assert "epochs" not in hs.row_options({"epochs": 3, "defaults": True})


def test_every_ablation_row_names_only_real_training_options():
    """A misspelt option in a row would otherwise fail only after hours of the ablation run."""
    from tinycil.learn.train import TrainConfig

    hs = _host_study()
    for label, opts in hs.ABLATION:
        cfg = TrainConfig(**hs.row_options(opts))  # TypeError on an unknown option
        assert cfg.epochs == TrainConfig().epochs, label
    lwf = [opts for label, opts in hs.ABLATION if "distillation from the old model" in label and opts.get("defaults")]
    assert [hs.row_options(o)["distill_weight"] for o in lwf] == [1.0, 3.0]
    assert all(hs.row_options(o)["balance_steps"] == hs.DEFAULT_ROW["balance_steps"] for o in lwf)


def test_the_plot_is_drawn_from_the_stored_study(tmp_path):
    """host_study.png from benchmarks/results' study and ablation: a real PNG, and the markdown
    points at it."""
    import json

    hs = _host_study()
    results = ROOT / "benchmarks" / "results"
    study = json.loads((results / "host_study.json").read_text())
    ablation = json.loads((results / "host_study_ablation.json").read_text())
    out = tmp_path / "host_study.png"
    hs.write_plot(study, ablation, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert "(host_study.png)" in hs.markdown(study, ablation)
    # The stored file is the one these results draw (regenerated with them).
    assert (results / "host_study.png").is_file()


def test_every_data_set_keeps_its_own_seeds():
    hs = _host_study()
    seed = {"config": {"seed": 4}}
    study = {"datasets": {"a": {"seeds": [0, 1, 2, 3], "per_seed": []}, "b": {"seeds": [0, 2], "per_seed": []}}}
    assert hs.study_seeds(study, "a") == [0, 1, 2, 3]
    assert hs.seeds_text(study) == "a 0-3; b 0, 2"
    # a study written with one list for every data set, and one with none kept at all
    assert hs.study_seeds({"seeds": [0, 1], "datasets": {"a": {"per_seed": []}}}, "a") == [0, 1]
    assert hs.study_seeds({"datasets": {"a": {"per_seed": [seed]}}}, "a") == [4]
    # the counts per data set: at least the three seeds the yardsticks are stated for
    assert all(n >= 3 for _, _, n in hs.STUDIES)


def test_the_ceiling_note_counts_class_orders_where_both_buffers_top_out():
    hs = _host_study()

    def run(m, r):
        return {"method": {"final_avg_accuracy": m}, "baselines": {"random_replay": {"final_avg_accuracy": r}}}

    note = hs.ceiling_note({"per_seed": [run(1.0, 1.0), run(1.0, 0.975), run(0.95, 1.0), run(1.0, 1.0)]})
    assert "both at 100.0% on 2 of 4, distilled ahead on 1, behind on 1" in note
    assert "rests on the other orders" in note
    assert "On every class order the test set cannot tell" in hs.ceiling_note({"per_seed": [run(1.0, 1.0)]})


def test_fashion_mnist_bar_and_what_moves_it_come_from_the_rows():
    """The 80% bar of Split Fashion-MNIST: met or how far short, and the rows that ask why, each
    against the procedure's row class order by class order."""
    hs = _host_study()

    def stat(mean):
        return {"mean": mean, "std": 0.01}

    agg = {run: {"final_avg_accuracy": stat(a)} for run, a in
           (("method", 0.789), ("fixed_size", 0.794), ("joint", 0.856))}
    study = {"datasets": {"fashion-mnist": {"seeds": [0, 1, 2], "aggregate": agg, "per_seed": []}}}
    lines = hs.fashion_bar_markdown(study, None)
    assert "the method reaches 78.9 ± 1.0% (seeds 0-2)" in lines[1] and lines[1].endswith("not met, 1.1 points short.")

    def row(label, seeds, method):
        return {"label": label, "seeds": seeds, "method": method, "fixed_size": [0.8] * len(seeds),
                "flops_ratio": [0.41] * len(seeds)}

    ab = {"datasets": {"fashion-mnist": [row(hs.DEFAULTS_ROW, [0, 1, 2], [0.79, 0.78, 0.79]),
                                         row(hs.BUFFER_2_ROW, [0, 1, 2], [0.80, 0.79, 0.78]),
                                         row(hs.EPOCHS_3_ROW, [1, 2], [0.81, 0.80])]}}
    text = "\n".join(hs.fashion_bar_markdown(study, ab))
    assert "| the buffer? twice as large (2%) | 0-2 | 79.0 | 80.0 | +0.3 ± 0.7 | 41.0% |" in text
    # only the class orders both rows ran are compared: +3.0 and +1.0
    assert "| too little training? 3 epochs per task instead of 2 | 1, 2 | 80.5 | 80.0 | +2.0 ± 1.0 |" in text
    assert "no growth" not in text  # a row not run is not shown
    assert "The best of these, 3 epochs per task instead of 2, gives the method 80.5%: at or above the bar." in text
    agg["method"]["final_avg_accuracy"] = stat(0.801)
    assert hs.fashion_bar_markdown(study, None)[1].endswith(": met.")
    # no fashion-mnist in the study: nothing to say
    assert hs.fashion_bar_markdown({"datasets": {}}, ab) == []
