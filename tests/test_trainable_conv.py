"""The device trains convolutions: the firmware's runtime built for the host (the twin) with a
trainable part that holds conv2d, depthwise conv2d, pooling and dense layers.

- its gradients of a whole mini-batch, accumulated sample by sample, are TensorFlow's
  (GradientTape over the same Keras model, on the same dequantised inputs);
- for dense layers the accumulation is bit for bit the full batch's gradient (the numpy
  reference computes it in one batched pass);
- growing convolution channels changes no prediction, with the same PRNG draws as the host's
  numpy reference (NetTail.grow);
- the memory plan's auto cut trains fewer layers on a board with less RAM.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

INPUT_SCALE, INPUT_ZP = 1.0 / 32, 0


def _export(model, family, plan_widths, plan_outputs, out_dir, batch=8, buffer=None):
    """The whole model trainable (empty int8 prefix), exported for the twin: plan step 0 is
    the model as it is, the next steps grow it to `plan_widths` / `plan_outputs`. `buffer`:
    (int8 samples, output units) of the replay buffer in flash (default: none)."""
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.export import ExportModel, export_model, tail_arrays, tail_channels
    from tinycil.learn.models import layer_channels, split_model, tail_layer_specs, weight_layers

    n = len(weight_layers(model))
    _, tail = split_model(model, n)
    specs = tail_layer_specs(tail)
    weights, biases, layout = tail_arrays(specs)
    plan = [{"classes_seen": o, "out": tail_channels(specs, layer_channels(family, w, o))}
            for w, o in zip(plan_widths, plan_outputs)]
    final = plan[-1]["out"]
    first_in = int(specs[0]["in_c"])
    shape = tuple(int(d) for d in model.input_shape[1:])
    em = ExportModel(
        name="conv-test", input_shape=shape, input_scale=INPUT_SCALE,
        input_zero_point=INPUT_ZP, table=[], latent_size=int(np.prod(shape)),
        latent_scale=INPUT_SCALE, latent_zero_point=INPUT_ZP, tail_weights=weights,
        tail_biases=biases,
        tail_max=[(first_in if l == 0 else final[l - 1], final[l]) for l in range(len(final))],
        plan=plan, known_tasks=1, classes_max=plan_outputs[-1],
        buffer_x=(np.zeros((0, int(np.prod(shape))), np.int8) if buffer is None
                  else np.asarray(buffer[0], np.int8).reshape(len(buffer[0]), -1)),
        buffer_y=np.zeros(0, np.uint8) if buffer is None else np.asarray(buffer[1], np.uint8),
        buffer_ram_capacity=4,
        defaults={"lr": 0.01, "momentum": 0.0, "clip_norm": 0.0, "batch_new": batch,
                  "batch_replay": 0, "seed": 3},
        tail_layout=layout)
    export_model(em, load_board("mps2_an500"), [out_dir])
    return out_dir


def _inputs(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    x8 = rng.integers(-40, 90, size=(n, *shape)).astype(np.int8)
    x = ((x8.astype(np.int32) - INPUT_ZP) * np.float32(INPUT_SCALE)).astype(np.float32)
    return x8, x


def _tf_grads(model, x, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True))
    return loss, [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]


def _as_runtime(layer, kernel):
    """A Keras kernel in the runtime's layout, flat (as Twin.tail_grads gives it)."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        return kernel.transpose(3, 0, 1, 2).ravel()
    if kind == "Conv1D":
        return kernel.transpose(2, 0, 1).ravel()
    if kind == "DepthwiseConv2D":
        return kernel[..., 0].ravel()
    return kernel.T.ravel()  # Dense: [out][features], features (h, w, c) as Keras flattens


def _twin_grads_flat(twin):
    return [(np.ravel(w), b) for w, b in twin.tail_grads() if np.size(w)]


@pytest.mark.parametrize("family, shape, widths", [
    ("cnn2d", (8, 8, 1), [4, 6, 12]),
    ("dscnn", (10, 6, 1), [4, 6, 6, 8]),
    ("cnn1d", (16, 3), [4, 5, 8]),
])
def test_trainable_tail_gradients_match_tensorflow(tmp_path, family, shape, widths):
    """A mini-batch of 8 through the runtime, one sample at a time: the accumulated gradient of
    the batch-mean loss of every conv, depthwise and dense layer is TensorFlow's full-batch one."""
    from tinycil.deploy.twin import Twin
    from tinycil.learn.models import build_model, weight_layers

    classes = 3
    model = build_model(family, shape, classes, widths, seed=5)
    _export(model, family, [widths], [classes], tmp_path / "m")
    twin = Twin(model_dir=tmp_path / "m")
    x8, x = _inputs(shape, 8)
    y = np.array([0, 1, 2, 1, 0, 2, 2, 1])
    rep = twin.train_samples(x8, y, end_of_batch=True)
    loss, tf_grads = _tf_grads(model, x, y)
    assert rep["stepped"] == 1 and rep["batch"] == 8
    np.testing.assert_allclose(rep["loss"], float(loss), rtol=1e-5)
    mine = _twin_grads_flat(twin)
    layers = weight_layers(model)
    assert len(mine) == len(layers)
    for layer, (gw, gb), tk, tb in zip(layers, mine, tf_grads[0::2], tf_grads[1::2]):
        scale = max(float(np.max(np.abs(tk))), 1e-6)
        np.testing.assert_allclose(gw, _as_runtime(layer, tk), atol=2e-5 * scale, rtol=1e-4,
                                   err_msg=layer.name)
        np.testing.assert_allclose(gb, tb, atol=2e-5 * max(float(np.max(np.abs(tb))), 1e-6),
                                   rtol=1e-4, err_msg=layer.name)


def test_sample_by_sample_accumulation_is_the_full_batch_bit_for_bit(tmp_path):
    """Dense layers: the runtime's per-sample accumulation gives exactly the batched gradient
    (the numpy reference's one batched pass in the device's operation order)."""
    from tinycil.deploy.twin import Twin
    from tinycil.learn.models import build_model
    from tinycil.learn.simulate import Tail

    model = build_model("mlp", (12,), 3, [10, 7], seed=2)
    _export(model, "mlp", [[10, 7]], [3], tmp_path / "m", batch=16)
    twin = Twin(model_dir=tmp_path / "m")
    x8, x = _inputs((12,), 16, seed=4)
    y = np.arange(16) % 3
    params = twin.tail_params()
    tail = Tail([w.T for w, _ in params], [b for _, b in params])
    _, gw, gb = tail.loss_and_grads(x, y)
    twin.train_samples(x8, y, end_of_batch=True)
    for (tw, tb), w, b in zip(twin.tail_grads(), gw, gb):
        assert np.array_equal(tw, w.T) and np.array_equal(tb, b)


def test_a_batch_ended_early_is_the_mean_over_its_own_samples(tmp_path):
    """Samples are trained as they arrive, each scaled by 1 / the planned batch; a batch ended
    early (5 of 8: a flush) still steps on the mean over its 5 samples, as a batch of 5 does."""
    from tinycil.deploy.twin import Twin
    from tinycil.learn.models import build_model

    model = build_model("cnn2d", (8, 8, 1), 3, [4, 6, 8], seed=1)
    x8, _ = _inputs((8, 8, 1), 5, seed=7)
    y = np.array([0, 2, 1, 1, 0])
    weights = []
    for batch in (8, 5):
        _export(model, "cnn2d", [[4, 6, 8]], [3], tmp_path / f"m{batch}", batch=batch)
        twin = Twin(model_dir=tmp_path / f"m{batch}")
        first = twin.train_samples(x8[:2], y[:2], end_of_batch=False)
        assert first["stepped"] == 0 and first["pending"] == 2
        rep = twin.train_samples(x8[2:], y[2:], end_of_batch=True)
        assert rep["stepped"] == 1 and rep["batch"] == 5
        weights.append((rep["loss"], rep["grad_norm"], twin.tail_params()))
    (loss8, norm8, early), (loss5, norm5, full) = weights
    assert loss8 == loss5
    np.testing.assert_allclose(norm8, norm5, rtol=1e-6)
    for (w8, b8), (w5, b5) in zip(early, full):
        np.testing.assert_allclose(w8, w5, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b8, b5, rtol=1e-5, atol=1e-7)


def test_prediction_between_a_batch_s_samples_changes_nothing_but_waits_for_a_batch_of_one(
        tmp_path):
    """A pending batch keeps only its gradient sums: predicting between its samples leaves the
    step bit for bit as it was. A batch of one keeps its gradient in the activations (the
    outer-product update), so the runtime refuses a prediction until that batch has stepped."""
    from tinycil.deploy.twin import Twin, TwinError
    from tinycil.learn.models import build_model

    model = build_model("mlp", (12,), 3, [10, 7], seed=2)
    x8, _ = _inputs((12,), 8, seed=5)
    y = np.arange(8) % 3
    _export(model, "mlp", [[10, 7]], [3], tmp_path / "m", batch=8)
    after = []
    for predict in (False, True):
        twin = Twin(model_dir=tmp_path / "m")
        twin.train_samples(x8[:4], y[:4], end_of_batch=False)
        if predict:
            twin.predict(x8[::-1])
        twin.train_samples(x8[4:], y[4:], end_of_batch=True)
        after.append(twin.tail_params())
    for (wa, ba), (wb, bb) in zip(*after):
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)

    _export(model, "mlp", [[10, 7]], [3], tmp_path / "one", batch=1)
    twin = Twin(model_dir=tmp_path / "one")
    twin.train_samples(x8[:1], y[:1], end_of_batch=False)
    with pytest.raises(TwinError, match="BAD_STATE"):
        twin.predict(x8[1:2])
    assert twin.train_samples(x8[:0], y[:0], end_of_batch=True)["stepped"] == 1
    assert len(twin.predict(x8[1:2])) == 1


def test_growing_conv_channels_changes_no_prediction(tmp_path):
    """BEGIN_TASK grows conv1, conv2 and the dense layers: old classes' logits are bit-identical,
    new classes' are zero, new filters are random, and the grown weights are the numpy
    reference's (same rule, same PRNG draws)."""
    from tinycil.deploy.twin import Twin
    from tinycil.learn.models import build_model, split_model, tail_layer_specs
    from tinycil.learn.prng import Prng
    from tinycil.learn.simulate import NetTail

    model = build_model("cnn2d", (8, 8, 1), 2, [3, 4, 6], seed=1)
    _export(model, "cnn2d", [[3, 4, 6], [5, 7, 9]], [2, 4], tmp_path / "m")
    twin = Twin(model_dir=tmp_path / "m")
    x8, x = _inputs((8, 8, 1), 12, seed=7)
    before = twin.logits(x8)
    w_before = twin.tail_params()
    twin.begin_task([2, 3])
    after = twin.logits(x8)
    assert np.array_equal(after[:, :2], before)
    assert np.all(after[:, 2:] == 0)
    w_after = twin.tail_params()
    conv1_old, conv1_new = w_before[0][0].size, w_after[0][0].size
    assert (conv1_old, conv1_new) == (3 * 9 * 1, 5 * 9 * 1)
    assert np.all(w_after[0][0][conv1_old:] != 0)  # new filters: random incoming weights
    conv2 = w_after[2][0].reshape(7, 3, 3, 5)
    assert np.all(conv2[:4, :, :, 3:] == 0)  # old filters ignore the new input channels

    ref = NetTail(tail_layer_specs(split_model(model, 4)[1]))
    np.testing.assert_allclose(ref.logits(x), before, rtol=1e-5, atol=1e-5)
    ref.grow([5, 7, 9], 4, Prng.for_task(3, 1))
    for (tw, tb), layer in zip(w_after, ref.layers):
        if layer["weights"] is not None:
            assert np.array_equal(np.ravel(tw), layer["weights"].ravel())
            assert np.array_equal(tb, layer["bias"])
    np.testing.assert_allclose(ref.logits(x), after, rtol=1e-5, atol=1e-5)


def small_ram_board(board, tmp_path, kb: int):
    """`board` with only `kb` KB of RAM, as a catalogue entry "small_ram" under tmp_path."""
    from tinycil.deploy.boards import load_board

    manifest = json.loads(board.manifest.read_text())
    manifest["tinycil"]["memory"]["ram_bytes"] = kb * 1024
    manifest["upload"]["maximum_ram_size"] = kb * 1024
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "small_ram.json").write_text(json.dumps(manifest))
    return load_board("small_ram", tmp_path)


def test_auto_cut_trains_less_on_a_board_with_less_ram(tmp_path):
    """The memory plan picks the most trainable layers that fit: all four weight layers of the
    digits cnn2d on the 320 KB board, fewer on a board with 96 KB; the reason says why."""
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.cut import choose_trainable
    from tinycil.learn.models import DEFAULT_WIDTHS
    from tinycil.learn.prepare import plan_for_device
    from tinycil.learn.sizing import WidthPolicy
    from tinycil.learn.tasks import make_tasks

    big = load_board("mps2_an500")
    small = small_ram_board(big, tmp_path, 96)
    assert small.ram_bytes == 96 * 1024

    tasks = make_tasks(10, 5)
    policy = WidthPolicy(DEFAULT_WIDTHS["cnn2d"])
    sizing = {"known": 1, "tasks": tasks, "batch_new": 16, "batch_replay": 16,
              "replay_store": "inputs", "input_shape": [8, 8, 1],
              "buffer_samples_per_task": [2] * 5}

    def plan_of(n):
        return plan_for_device(policy, tasks, 10, 1, n, "cnn2d")

    n_big, why_big = choose_trainable(big, "cnn2d", (8, 8, 1), 10, plan_of, sizing)
    n_small, why_small = choose_trainable(small, "cnn2d", (8, 8, 1), 10, plan_of, sizing)
    print(f"\n{why_big}\n{why_small}")
    assert n_big == 4
    assert 1 <= n_small < n_big
    assert "small_ram" in why_small and f"{n_small + 1} would need" in why_small


def test_prefix_at_its_final_width_and_the_model_scaled_to_fit_the_board(tmp_path):
    """The frozen prefix never grows on the device, so the sized cut builds it at its final width
    from the first task on and scales the whole model down (x 1, 7/8, ... 1/2) until it fits:
    the most trainable layers first, each at its widest scale that fits. The chosen plan fits,
    one step wider does not, and a board with less RAM gets a smaller model or fewer layers."""
    from tinycil.deploy import memplan
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.cut import WIDTH_SCALES, choose_sized_cut, model_footprint
    from tinycil.learn.models import DEFAULT_WIDTHS, backbone_width_count, build_model
    from tinycil.learn.prepare import plan_for_device
    from tinycil.learn.sizing import WidthPolicy
    from tinycil.learn.tasks import make_tasks

    tasks = make_tasks(10, 5)
    policy = WidthPolicy(DEFAULT_WIDTHS["cnn2d"])
    # Split Fashion-MNIST 14x14 with a 1% buffer: 120 samples per task.
    sizing = {"known": 1, "tasks": tasks, "batch_new": 32, "batch_replay": 32,
              "replay_store": "inputs", "input_shape": [14, 14, 1],
              "buffer_samples_per_task": [120] * 5}

    def plan_of(n, s):
        return plan_for_device(policy, tasks, 10, 1, n, "cnn2d", prefix_scale=s)

    def ram(board, n, s):
        plan = plan_of(n, s)
        model = build_model("cnn2d", (14, 14, 1), plan[0]["outputs"], plan[0]["widths"])
        return memplan.plan_memory(model_footprint(model, plan, sizing, n), board)

    # The plan itself: the prefix at the scaled policy's final widths at every task.
    plan = plan_of(2, 0.75)
    final = policy.scaled(0.75).widths(10, 10)
    nb = backbone_width_count("cnn2d", 2)
    assert final == [12, 24, 48]
    assert all(e["widths"][:nb] == final[:nb] for e in plan)
    assert plan[-1]["widths"] == final and plan[0]["tail_widths"][0] < final[-1]

    big = load_board("mps2_an500")
    n, s, why = choose_sized_cut(big, "cnn2d", (14, 14, 1), None, plan_of, sizing)
    print(f"\n{why}")
    assert s is not None and ram(big, n, s).fits
    wider = WIDTH_SCALES[WIDTH_SCALES.index(s) - 1] if s != WIDTH_SCALES[0] else None
    if wider is not None:
        assert not ram(big, n, wider).fits
        assert f"x {wider:g} would need" in why
    if n < 4:
        assert not ram(big, n + 1, WIDTH_SCALES[-1]).fits
    assert why.startswith(f"trainable layers: {n} of 4, model widths x {s:g}")
    # With the layers fixed (--trainable 2), only the width is chosen.
    n2, s2, _ = choose_sized_cut(big, "cnn2d", (14, 14, 1), 2, plan_of, sizing)
    assert n2 == 2 and ram(big, 2, s2).fits

    small = small_ram_board(big, tmp_path, 200)
    n_small, s_small, why_small = choose_sized_cut(small, "cnn2d", (14, 14, 1), None, plan_of,
                                                   sizing)
    print(why_small)
    assert (n_small, -(s_small or 0)) < (n, -s)  # fewer layers, or as many at a smaller width
    assert s_small is None or ram(small, n_small, s_small).fits
