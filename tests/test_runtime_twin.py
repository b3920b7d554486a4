"""The device runtime built for the host (tinycil.deploy.twin) on a prepared digits run: its int8 backbone
equals LiteRT's, growth changes no prediction, and a short task sequence agrees with the numpy
reference (tinycil.learn.simulate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


_PREPARED: dict = {}


def prepared_run(tmp_path_factory, dataset: str, **options):
    """One quick run of `dataset` per test session, exported for the host twin (the export
    tests use it too)."""
    if dataset not in _PREPARED:
        from tinycil.deploy.export import export_run
        from tinycil.learn.prepare import prepare_run

        run = tmp_path_factory.mktemp("runs") / dataset
        prepare_run(dataset, run, quick=True, progress=False, seed=0, **options)
        export_run(run, "mps2_an500", firmware=False)
        _PREPARED[dataset] = run
    return _PREPARED[dataset]


def prepared_digits_run(tmp_path_factory):
    # replay_shift on (digits' default is off: 8x8 images), so that the twin's agreement with
    # the simulation covers every device ingredient.
    return prepared_run(tmp_path_factory, "digits", replay_shift=1)


def prepared_basic_motions_run(tmp_path_factory):
    """A cnn1d run: Conv1D as CONV_2D between RESHAPEs, GlobalAveragePooling1D as MEAN."""
    return prepared_run(tmp_path_factory, "basic-motions", n_tasks=2)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return prepared_digits_run(tmp_path_factory)


def test_describe_matches_export(digits_run):
    from tinycil.deploy.export import read_signature
    from tinycil.deploy.twin import Twin

    d = Twin(digits_run).describe()
    manifest = json.loads((digits_run / "export" / "manifest.json").read_text())
    assert d["has_model"] == 1 and d["signature"] == read_signature(digits_run)
    assert d["classes_seen"] == 2 and d["classes_max"] == 10
    assert d["buffer_fill"] == manifest["buffer"]["flash_samples"]
    # the runtime carves exactly the arena the memory plan sized
    assert d["arena_bytes"] == manifest["arena_bytes"]
    assert 0 <= d["arena_bytes"] - d["arena_used"] < 16


def _run_data(run):
    """Config, tasks (class ids), the quantised test/train data per task as output units."""
    from tinycil.datasets import load_dataset
    from tinycil.learn.quantize import quantize_inputs
    from tinycil.runfolder import RunFolder
    from tinycil.learn.tasks import task_subset

    rf = RunFolder(run)
    cfg = rf.read_config()
    ds = load_dataset(cfg["dataset"], resize=cfg["resize"], seed=cfg["seed"])
    tasks = cfg["task_classes"]
    order = [c for t in tasks for c in t]
    unit_of = np.zeros(ds.num_classes, np.int64)
    unit_of[order] = np.arange(len(order))
    iq = cfg["input_quantization"]
    parts = []
    for t in tasks:
        xtr, ytr = task_subset(ds.x_train, ds.y_train, t)
        xte, yte = task_subset(ds.x_test, ds.y_test, t)
        q = lambda x: quantize_inputs(x, iq["scale"], iq["zero_point"])  # noqa: E731
        parts.append((q(xtr), unit_of[ytr], q(xte), unit_of[yte]))
    return rf, cfg, tasks, unit_of, parts


def assert_backbone_equals_litert(run, n_samples):
    from tinycil.learn.quantize import make_interpreter
    from tinycil.deploy.twin import Twin

    rf, cfg, tasks, _, parts = _run_data(run)
    tflite = (run / cfg["backbone_file"]).read_bytes()
    interp = make_interpreter(tflite)
    i_idx = interp.get_input_details()[0]["index"]
    o_idx = interp.get_output_details()[0]["index"]
    x = np.concatenate([p[2] for p in parts] + [p[0] for p in parts])[:n_samples]
    ref = []
    for xi in x:
        interp.set_tensor(i_idx, xi[None])
        interp.invoke()
        ref.append(interp.get_tensor(o_idx).reshape(-1).copy())
    ref = np.stack(ref)
    got = Twin(run).backbone(x)
    assert got.shape == ref.shape
    assert np.array_equal(got, ref), f"{np.count_nonzero(got != ref)} latent values differ"
    return x, got


def test_backbone_equals_litert(digits_run):
    assert_backbone_equals_litert(digits_run, 200)


@pytest.fixture(scope="module")
def basic_motions_run(tmp_path_factory):
    return prepared_basic_motions_run(tmp_path_factory)


def test_signal_backbone_with_mean_equals_litert(basic_motions_run):
    """cnn1d's backbone ends in MEAN (global average pooling): the runtime's table holds it and
    the twin's int8 latents equal LiteRT's on every test and training sample."""
    manifest = json.loads((basic_motions_run / "export" / "manifest.json").read_text())
    layers = manifest["backbone_layers"]
    assert layers[-1] == "MEAN" and "CONV_2D" in layers and "RESHAPE" in layers
    x, latents = assert_backbone_equals_litert(basic_motions_run, 80)
    assert len(x) == 80
    # a real average, not a constant: the latents vary across samples
    assert len({row.tobytes() for row in latents}) > 40


def test_signal_run_growth_changes_no_prediction(basic_motions_run):
    from tinycil.deploy.twin import Twin

    _, cfg, tasks, _, parts = _run_data(basic_motions_run)
    twin = Twin(basic_motions_run)
    x = parts[0][2]
    before = twin.logits(x)
    twin.begin_task(tasks[1])
    after = twin.logits(x)
    assert np.array_equal(after[:, :len(tasks[0])], before)
    assert np.all(after[:, len(tasks[0]):] == 0)


def test_growth_changes_no_prediction(digits_run):
    from tinycil.deploy.twin import Twin

    _, cfg, tasks, _, parts = _run_data(digits_run)
    twin = Twin(digits_run)
    x = np.concatenate([p[2] for p in parts[:1]])
    before_logits = twin.logits(x)
    before = twin.predict(x)
    w_before = twin.tail_params()
    twin.begin_task([2, 3])
    after_logits = twin.logits(x)
    assert twin.describe()["classes_seen"] == 4
    assert np.array_equal(twin.predict(x), before)
    # old classes' logits are bit-identical; the new classes' logits are exactly zero
    assert np.array_equal(after_logits[:, :2], before_logits)
    assert np.all(after_logits[:, 2:] == 0)
    w_after = twin.tail_params()
    assert w_after[0][0].shape[0] > w_before[0][0].shape[0]  # the hidden layer did grow
    # new hidden units have nonzero incoming weights, zero outgoing ones
    n_old = w_before[0][0].shape[0]
    assert np.any(w_after[0][0][n_old:] != 0)
    assert np.all(w_after[1][0][:, n_old:] == 0)


def test_growth_init_matches_simulate(digits_run):
    """Same PRNG draws, same rule: the grown tail equals simulate's Tail.grow bit for bit."""
    from tinycil.learn.prng import Prng
    from tinycil.learn.simulate import Tail
    from tinycil.deploy.twin import Twin

    twin = Twin(digits_run)
    params = twin.tail_params()
    tail = Tail([w.T for w, _ in params], [b for _, b in params])
    plan = json.loads((digits_run / "plan.json").read_text())
    tail.grow(plan[1]["tail_widths"], plan[1]["outputs"], Prng.for_task(0, 1))
    twin.begin_task([2, 3])
    for (w, b), ws, bs in zip(twin.tail_params(), tail.weights, tail.biases):
        assert np.array_equal(w, ws.T)
        assert np.array_equal(b, bs)


@pytest.mark.parametrize("asymmetric_ce", [True, False], ids=["asymmetric-ce", "plain-ce"])
def test_twin_agrees_with_simulate(digits_run, asymmetric_ce):
    """Every field task of the run: accuracy matrices within 1 point; weights close after N steps.
    Both losses: the default chooses the plain cross-entropy for buffers of several samples per
    class (tinycil.learn.train.default_asymmetric_ce)."""
    from tinycil.learn.prng import Prng
    from tinycil.learn.simulate import (ReplayBuffer, RunInputs, end_task, evaluate_units,
                                        fit_head_device, train_task)
    from tinycil.learn.train import device_ingredients
    from tinycil.deploy.twin import Twin, run_device_procedure

    inp = RunInputs(digits_run)
    cfg, plan, tasks = inp.config, inp.plan, inp.tasks
    tr = cfg["training"]
    # the defaults: every device ingredient runs (digits' buffer of 1-2 samples per class takes
    # the asymmetric loss); the plain loss is the same run with it switched off
    assert device_ingredients(tr)["asymmetric_ce"]
    tr["asymmetric_ce"] = asymmetric_ce  # the config both procedures below read
    ing = device_ingredients(tr)
    assert ing["balance_steps"] > 0 and ing["replay_shift"] > 0
    assert ing["discriminant_weight"] > 0
    unit_of = {int(c): k for k, c in enumerate(plan[-1]["seen_classes"])}

    def units(y):
        return np.array([unit_of[int(c)] for c in y], dtype=np.int64)

    twin = Twin(digits_run)
    heads_dev = {}
    R_dev = run_device_procedure(twin, inp, on_task=lambda t, tw: heads_dev.update({t: tw.head_params()}))

    # simulate's procedure (as simulate_run), keeping its tail to compare the weights
    tail = inp.tail.copy()
    buffer = ReplayBuffer()
    for t in range(inp.known):
        buffer.add(inp.buffers[t][0], inp.buffers[t][2], inp.buffers[t][1])
    R_sim = [[None] * len(tasks) for _ in tasks]
    for t in range(inp.known, len(tasks)):
        prng = Prng.for_task(inp.seed, t)
        tail.grow(plan[t]["tail_widths"], plan[t]["outputs"], prng)
        _, lat, y = inp.train[t]
        train_task(tail, lat, units(y), buffer, unit_of, prng, seed=inp.seed, task=t,
                   epochs=int(tr["epochs"]), batch_new=int(tr["batch_new"]),
                   batch_replay=int(tr["batch_replay"]), lr=float(tr["lr"]),
                   momentum=float(tr["momentum"]), clip_norm=float(tr["clip_norm"]),
                   task_lo=min(unit_of[int(c)] for c in tasks[t]) if asymmetric_ce else 0,
                   replay_shift=ing["replay_shift"])
        buffer.add(inp.buffers[t][0], inp.buffers[t][2], inp.buffers[t][1])
        end_task(tail, buffer, unit_of, prng, batch_replay=int(tr["batch_replay"]),
                 lr=float(tr["lr"]), momentum=float(tr["momentum"]),
                 clip_norm=float(tr["clip_norm"]), balance_steps=ing["balance_steps"],
                 balance_lr_scale=ing["balance_lr_scale"], replay_shift=ing["replay_shift"])
        head, _ = fit_head_device(tail, buffer, unit_of, lat, units(y), ing["discriminant_shrinkage"])
        # the runtime's fit, float for float
        w_dev, b_dev = heads_dev[t]
        assert w_dev.shape == head.weights.shape == (plan[t]["outputs"], plan[t]["tail_widths"][-1])
        np.testing.assert_array_equal(w_dev, head.weights)
        np.testing.assert_array_equal(b_dev, head.bias)
        for j in range(t + 1):
            _, tlat, ty = inp.test[j]
            R_sim[t][j] = evaluate_units(tail, tlat, units(ty), tail.num_outputs, head,
                                         ing["discriminant_weight"])

    diffs = [abs(a - b) for ra, rb in zip(R_dev, R_sim) for a, b in zip(ra, rb) if a is not None]
    weights = twin.tail_params()
    wdiff = max(float(np.max(np.abs(w - ws.T))) for (w, _), ws in zip(weights, tail.weights))
    steps = twin.stats()["steps"]
    print(f"\ntwin vs simulate: max accuracy difference {max(diffs):.4f}, max weight difference "
          f"{wdiff:.3g} after {steps} steps")
    assert steps > 0 and len(diffs) == sum(t + 1 for t in range(inp.known, len(tasks)))
    assert max(diffs) <= 0.01, (R_dev, R_sim)
    assert wdiff < 1e-3


def test_asymmetric_loss_and_end_of_task_pass(digits_run):
    """The runtime's two ingredients against forgetting: with the asymmetric cross-entropy a step
    on new samples alone leaves the old classes' output rows untouched (without it, it pushes
    them down); the end-of-task pass takes balance_steps steps of replay and moves the weights."""
    from tinycil.deploy.twin import Twin

    _, cfg, tasks, _, parts = _run_data(digits_run)
    tr = cfg["training"]
    x, y = parts[1][0][:8], parts[1][1][:8]  # task 1's samples: output units 2 and 3
    rows = {}
    for asymmetric in (True, False):
        twin = Twin(digits_run)
        twin.set_training(float(tr["lr"]), 0.0, 8, 0, float(tr["clip_norm"]), 0,
                          asymmetric_ce=asymmetric)
        twin.begin_task([2, 3])
        before = twin.tail_params()[-1]
        twin.train_samples(x, y)
        after = twin.tail_params()[-1]
        rows[asymmetric] = [np.array_equal(a[:2], b[:2]) for a, b in zip(after, before)]
    assert rows[True] == [True, True]     # weights and bias of units 0 and 1 unchanged
    assert rows[False] == [False, False]  # the plain softmax lowers them

    for steps in (0, 7):
        twin = Twin(digits_run)
        twin.set_training(float(tr["lr"]), 0.9, 8, 4, float(tr["clip_norm"]), 0,
                          balance_steps=steps, balance_lr_scale=0.5)
        twin.begin_task([2, 3])
        twin.train_samples(x, y)
        twin.add_buffer_samples(parts[1][0][8:10], parts[1][1][8:10])
        before, stats = twin.tail_params(), twin.stats()
        report = twin.end_task()
        moved = any(not np.array_equal(a, b) for (a, _), (b, _) in zip(twin.tail_params(), before))
        assert twin.stats()["steps"] - stats["steps"] == steps
        assert moved == (steps > 0) and report["stepped"] == (steps > 0)
        if steps:
            assert report["batch"] == 4 and np.isfinite(report["loss"])


def test_the_heads_statistics_are_dropped_when_the_model_or_buffer_changes(digits_run):
    """The head is fitted on the model and buffer the statistics began with: training, new buffer
    samples or a new task in between drop them (the fit is then refused and the head stays off),
    and the predictions use the head exactly when one is fitted."""
    from tinycil.deploy.twin import Twin, TwinError

    _, cfg, _, _, parts = _run_data(digits_run)
    tr = cfg["training"]
    x, y = parts[1][0][:8], parts[1][1][:8]
    for interrupt in ("train", "buffer", "begin", None):
        twin = Twin(digits_run)
        twin.set_training(float(tr["lr"]), 0.9, 8, 4, float(tr["clip_norm"]), 0,
                          discriminant_weight=0.5)
        twin.begin_task([2, 3])
        twin.train_samples(x, y)
        twin.add_buffer_samples(parts[1][0][8:10], parts[1][1][8:10])
        without = twin.logits(parts[1][0][:20])
        twin.end_task()
        twin.observe_samples(parts[1][0][:20], parts[1][1][:20])
        if interrupt == "train":
            twin.train_samples(x, y)
        elif interrupt == "buffer":
            twin.add_buffer_samples(parts[1][0][10:11], parts[1][1][10:11])
        elif interrupt == "begin":
            twin.begin_task([2, 3])
        if interrupt is None:
            twin.fit_head()
            w, b = twin.head_params()
            assert w.shape == (4, twin.tail_params()[-1][0].shape[1]) and np.isfinite(w).all()
            assert not np.array_equal(twin.logits(parts[1][0][:20]), without)
            continue
        with pytest.raises(TwinError, match="BAD_STATE"):
            twin.fit_head()
        with pytest.raises(TwinError, match="BAD_STATE"):
            twin.observe_samples(x, y)
        assert twin.head_params()[0].size == 0
