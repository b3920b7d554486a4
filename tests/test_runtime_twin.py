"""The device runtime built for the host (tinycil.twin) on a prepared digits run: its int8 backbone
equals LiteRT's, growth changes no prediction, and a short task sequence agrees with the numpy
reference (tinycil.simulate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from tinycil.export import export_run
    from tinycil.prepare import prepare_run

    run = tmp_path_factory.mktemp("runs") / "digits"
    prepare_run("digits", run, quick=True, progress=False, seed=0)
    export_run(run, "mps2_an500", firmware=False)
    return run


def _run_data(run):
    """Config, tasks (class ids), the quantised test/train data per task as output units."""
    from tinycil.datasets import load_dataset
    from tinycil.quantize import quantize_inputs
    from tinycil.runfolder import RunFolder
    from tinycil.tasks import task_subset

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


def test_backbone_equals_litert(digits_run):
    from tinycil.quantize import make_interpreter
    from tinycil.twin import Twin

    rf, cfg, tasks, _, parts = _run_data(digits_run)
    tflite = (digits_run / cfg["backbone_file"]).read_bytes()
    interp = make_interpreter(tflite)
    i_idx = interp.get_input_details()[0]["index"]
    o_idx = interp.get_output_details()[0]["index"]
    x = np.concatenate([p[2] for p in parts])[:200]
    ref = []
    for xi in x:
        interp.set_tensor(i_idx, xi[None])
        interp.invoke()
        ref.append(interp.get_tensor(o_idx).reshape(-1).copy())
    ref = np.stack(ref)
    got = Twin(digits_run).backbone(x)
    assert got.shape == ref.shape
    assert np.array_equal(got, ref), f"{np.count_nonzero(got != ref)} latent values differ"


def test_growth_changes_no_prediction(digits_run):
    from tinycil.twin import Twin

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
    from tinycil.prng import Prng
    from tinycil.simulate import Tail
    from tinycil.twin import Twin

    twin = Twin(digits_run)
    params = twin.tail_params()
    tail = Tail([w.T for w, _ in params], [b for _, b in params])
    plan = json.loads((digits_run / "plan.json").read_text())
    tail.grow(plan[1]["tail_widths"], plan[1]["outputs"], Prng.for_task(0, 1))
    twin.begin_task([2, 3])
    for (w, b), ws, bs in zip(twin.tail_params(), tail.weights, tail.biases):
        assert np.array_equal(w, ws.T)
        assert np.array_equal(b, bs)


def _accuracy_matrix(predict_fn, parts, t, n_tasks, row):
    for j in range(t + 1):
        row[j] = float(np.mean(predict_fn(parts[j][2]) == parts[j][3]))


def test_twin_agrees_with_simulate(digits_run):
    """Three field tasks, two epochs each: accuracy matrices within 1 point, weights close."""
    from tinycil.prng import Prng
    from tinycil.quantize import dequantize, make_interpreter
    from tinycil.simulate import ReplayBuffer, Tail, evaluate, stream_order, train_task
    from tinycil.twin import Twin

    rf, cfg, tasks, unit_of, parts = _run_data(digits_run)
    tr = cfg["training"]
    seed, known = cfg["seed"], cfg["known_tasks"]
    n_tasks = 4  # known task + three field tasks keeps the test short
    epochs = 2
    lq = cfg["latent_quantization"]
    interp = make_interpreter((digits_run / cfg["backbone_file"]).read_bytes())
    i_idx = interp.get_input_details()[0]["index"]
    o_idx = interp.get_output_details()[0]["index"]

    def latents(x8):
        out = []
        for xi in x8:
            interp.set_tensor(i_idx, xi[None])
            interp.invoke()
            out.append(interp.get_tensor(o_idx).reshape(-1).copy())
        return dequantize(np.stack(out), lq["scale"], lq["zero_point"])

    twin = Twin(digits_run)
    twin.set_training(tr["lr"], tr["momentum"], tr["batch_new"], tr["batch_replay"],
                      tr["clip_norm"], seed)
    params = twin.tail_params()
    tail = Tail([w.T for w, _ in params], [b for _, b in params])
    buf = ReplayBuffer()
    for t in range(known):
        b = rf.load_buffer(t)
        buf.add(b["x_int8"], b["y"], latents(b["x_int8"]))
    targets = {int(c): int(unit_of[c]) for c in unit_of.argsort()}
    targets = {c: int(unit_of[c]) for c in range(len(unit_of))}
    plan = rf.read_plan()

    R_dev = np.full((n_tasks, n_tasks), np.nan)
    R_sim = np.full((n_tasks, n_tasks), np.nan)
    for t in range(known, n_tasks):
        units = [int(unit_of[c]) for c in tasks[t]]
        twin.begin_task(units)
        prng = Prng.for_task(seed, t)
        tail.grow(plan[t]["tail_widths"], plan[t]["outputs"], prng)
        x8, y = parts[t][0], parts[t][1]
        bn = tr["batch_new"]
        for epoch in range(epochs):
            order = stream_order(len(y), seed, t, epoch)
            for start in range(0, len(y) - bn + 1, bn):
                idx = order[start:start + bn]
                rep = twin.train_samples(x8[idx], y[idx], end_of_batch=True)
                assert rep["stepped"] == 1 and rep["batch"] == bn + tr["batch_replay"]
        train_task(tail, latents(x8), y, buf, targets, prng, seed=seed, task=t, epochs=epochs,
                   batch_new=bn, batch_replay=tr["batch_replay"], lr=tr["lr"],
                   momentum=tr["momentum"], clip_norm=tr["clip_norm"])
        b = rf.load_buffer(t)
        twin.add_buffer_samples(b["x_int8"], unit_of[b["y"]])
        buf.add(b["x_int8"], b["y"], latents(b["x_int8"]))
        _accuracy_matrix(twin.predict, parts, t, n_tasks, R_dev[t])
        for j in range(t + 1):
            R_sim[t, j] = evaluate(tail, latents(parts[j][2]), parts[j][3])
    diff = np.nanmax(np.abs(R_dev - R_sim))
    wdiff = max(float(np.max(np.abs(w - ws.T))) for (w, _), ws in zip(twin.tail_params(), tail.weights))
    print(f"max accuracy difference {diff:.4f}, max weight difference {wdiff:.3g}, "
          f"steps {twin.stats()['steps']}")
    assert diff <= 0.01, (R_dev, R_sim)
    assert wdiff < 1e-3
    assert twin.stats()["steps"] > 0
