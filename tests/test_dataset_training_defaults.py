"""Each data set's training defaults reach both halves alike: the host-only study (experiment) and
the device run (prepare, whose config the device and its host reference train with). The loss is
the one that measured better on the data set (DatasetDefaults.asymmetric_ce); a user's choice wins."""

import json

import pytest

from tinycil.learn.experiment import defaults_for, run_experiment
from tinycil.learn.prepare import prepare_run


def test_the_plain_loss_is_the_default_only_where_it_measured_better():
    assert not defaults_for("fashion-mnist").asymmetric_ce and not defaults_for("mnist5k").asymmetric_ce
    assert defaults_for("digits").asymmetric_ce and defaults_for("basic-motions").asymmetric_ce
    assert defaults_for("a data set never measured").asymmetric_ce  # the safe loss


@pytest.mark.parametrize("dataset, expected", [("mnist5k", False), ("digits", True)])
def test_experiment_and_prepare_train_with_the_data_sets_loss(dataset, expected, tmp_path):
    small = {"max_train": 300, "max_test": 100}
    res = run_experiment(dataset, n_tasks=2, epochs=1, distill_iters=2, runs=("method",),
                         progress=False, **small)
    assert res["config"]["training"]["asymmetric_ce"] is expected
    chosen = run_experiment(dataset, n_tasks=2, epochs=1, distill_iters=2, runs=("method",),
                            progress=False, train_options={"asymmetric_ce": not expected}, **small)
    assert chosen["config"]["training"]["asymmetric_ce"] is (not expected)

    prepare_run(dataset, tmp_path / "run", n_tasks=2, quick=True, progress=False, **small)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["asymmetric_ce"] is expected
    prepare_run(dataset, tmp_path / "mine", n_tasks=2, quick=True, progress=False,
                asymmetric_ce=not expected, **small)
    assert json.loads((tmp_path / "mine" / "config.json").read_text())["training"]["asymmetric_ce"] is (not expected)
