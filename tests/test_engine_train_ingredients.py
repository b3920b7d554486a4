"""The training ingredients against forgetting (tinycil.learn.train): each does what it says."""

import numpy as np

from tinycil.learn.models import build_model
from tinycil.learn.train import Trainer, TrainConfig, align_new_outputs, logits


def _blobs(classes, n_per, seed):
    """Separable 2-D-ish data: class c is a Gaussian blob around a fixed random centre."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, size=(10, 6))
    x = np.concatenate([centres[c] + rng.normal(0, 1, size=(n_per, 6)) for c in classes]).astype(np.float32)
    y = np.repeat(np.arange(len(classes)), n_per) + min(classes)
    return x, y.astype(np.int64)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _task0_model(seed=0):
    """An mlp over 4 output units that learned units 0 and 1."""
    model = build_model("mlp", (6,), 4, [16, 8], seed=seed)
    x, y = _blobs([0, 1], 32, seed=1)
    Trainer(model, TrainConfig(epochs=5, batch_new=16)).train_task(x, y, 2, task=0, seed=0)
    return model


def test_weight_aligning_equalises_mean_row_norms_and_keeps_the_old_rows():
    model = build_model("mlp", (6,), 4, [16, 8], seed=3)
    k, b = (w.numpy() for w in model.layers[-1].weights)
    k[:, 2:] *= 3.0
    model.layers[-1].set_weights([k, b])
    gamma = align_new_outputs(model, n_old=2, n_active=4)
    k2 = model.layers[-1].weights[0].numpy()
    norms = np.linalg.norm(k2, axis=0)
    assert np.isclose(norms[:2].mean(), norms[2:].mean(), rtol=1e-5)
    assert np.array_equal(k2[:, :2], k[:, :2]) and np.isclose(gamma, np.linalg.norm(k[:, :2], axis=0).mean()
                                                              / np.linalg.norm(k[:, 2:], axis=0).mean())


def test_distillation_term_is_zero_while_the_model_is_still_the_old_one():
    # One step: the returned loss is the loss before the update, when student == teacher.
    x, y = _blobs([2, 3], 8, seed=2)
    buffer = _blobs([0, 1], 4, seed=3)
    losses = []
    for weight in (0.0, 5.0):
        model = _task0_model()
        cfg = TrainConfig(epochs=1, batch_new=16, batch_replay=8, distill_weight=weight, distill_new=True)
        losses.append(Trainer(model, cfg).train_task(x, y, 4, task=1, seed=0, replay=buffer)["loss"])
    assert np.isclose(losses[0], losses[1], rtol=1e-6)


def test_distillation_keeps_the_old_units_answers_and_its_forward_passes_are_counted():
    x, y = _blobs([2, 3], 64, seed=4)
    buffer = _blobs([0, 1], 3, seed=5)
    probe, _ = _blobs([0, 1], 50, seed=6)
    drift, stats = {}, {}
    cfg_temperature = TrainConfig().distill_temperature
    for weight in (0.0, 5.0):
        model = _task0_model()
        before = _softmax(logits(model, probe)[:, :2] / cfg_temperature)
        # The asymmetric loss (a default) protects the old units too: off, to see distillation alone.
        cfg = TrainConfig(epochs=4, batch_new=16, batch_replay=8, distill_weight=weight, distill_new=True,
                          asymmetric_ce=False)
        stats[weight] = Trainer(model, cfg).train_task(x, y, 4, task=1, seed=0, replay=buffer)
        after = _softmax(logits(model, probe)[:, :2] / cfg_temperature)
        # What distillation minimises: KL(old || new) of the old units' softened answers.
        drift[weight] = float(np.mean(np.sum(before * (np.log(before) - np.log(after)), axis=1)))
    assert drift[5.0] < 0.5 * drift[0.0]
    assert stats[0.0]["extra_forward_samples"] == 0
    # The old model once over the buffer, and once per new sample per step (4 epochs x 128 samples).
    assert stats[5.0]["extra_forward_samples"] == len(buffer[0]) + 4 * 128
    assert stats[5.0]["samples"] == stats[0.0]["samples"] == 4 * 8 * (16 + 8)


def test_balanced_pass_trains_on_the_buffer_after_the_task():
    model = _task0_model()
    buffer = _blobs([0, 1, 2, 3], 2, seed=7)
    before = [w.numpy().copy() for w in model.trainable_variables]
    trainer = Trainer(model, TrainConfig(batch_replay=8, balance_steps=5))
    assert trainer.after_task(2, 4, task=1, seed=0, buffer=buffer) == {"samples": 40}
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_variables))
    # The first task has nothing to balance against.
    assert Trainer(model, TrainConfig(balance_steps=5)).after_task(0, 2, task=0, seed=0, buffer=buffer) == {
        "samples": 0}


def test_asymmetric_ce_scores_new_samples_over_their_own_task_only():
    # With no replay, the task's samples see only units 2 and 3: the old classes' output rows get
    # no gradient at all and stay exactly as they were; the plain loss pushes them down.
    x, y = _blobs([2, 3], 32, seed=8)
    kept = {}
    for ace in (False, True):
        model = _task0_model()
        before = [w.numpy().copy() for w in model.layers[-1].weights]
        Trainer(model, TrainConfig(epochs=2, batch_new=16, asymmetric_ce=ace)).train_task(x, y, 4, task=1, seed=0)
        after = [w.numpy() for w in model.layers[-1].weights]
        kept[ace] = np.array_equal(before[0][:, :2], after[0][:, :2]) and np.array_equal(before[1][:2], after[1][:2])
        assert not np.array_equal(before[0][:, 2:], after[0][:, 2:])
    assert kept == {False: False, True: True}


def test_asymmetric_ce_still_scores_replayed_samples_over_every_class():
    x, y = _blobs([2, 3], 32, seed=9)
    buffer = _blobs([0, 1], 4, seed=10)
    model = _task0_model()
    before = model.layers[-1].weights[0].numpy().copy()
    Trainer(model, TrainConfig(epochs=1, batch_new=16, batch_replay=8, asymmetric_ce=True)).train_task(
        x, y, 4, task=1, seed=0, replay=buffer)
    assert not np.array_equal(before[:, :2], model.layers[-1].weights[0].numpy()[:, :2])


def test_replay_shift_moves_images_in_height_and_width_series_in_time_and_vectors_not():
    from tinycil.learn.train import default_replay_shift, shift_axes, shift_sample, shifted

    img = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
    moved = shift_sample(img, [1, -2])  # down 1, left 2
    assert np.array_equal(moved[1:, :3], img[:3, 2:]) and not moved[0].any() and not moved[:, 3:].any()
    series = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    assert np.array_equal(shift_sample(series, [2])[2:], series[:4])
    assert shift_axes((6, 3)) == [0] and shift_axes((1, 6, 3)) == [1] and shift_axes((6,)) == []
    vectors = np.random.default_rng(0).normal(size=(3, 4, 6)).astype(np.float32)
    assert np.array_equal(shifted(vectors, 1, 1, np.random.default_rng(1)), vectors)

    # Every moved copy is the sample translated by an offset in -1..1 each way, and every such
    # offset occurs.
    batch = np.random.default_rng(2).normal(size=(2, 40, 4, 5, 2)).astype(np.float32)
    out = shifted(batch, 3, 1, np.random.default_rng(3))
    seen = set()
    for a, b in zip(batch.reshape(-1, 4, 5, 2), out.reshape(-1, 4, 5, 2)):
        hits = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if np.array_equal(shift_sample(a, [dy, dx]), b)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) == 9
    assert default_replay_shift("image", (14, 14, 1)) == 1
    assert default_replay_shift("image", (8, 8, 1)) == 0 and default_replay_shift("inertial", (100, 6)) == 0


def test_replay_shift_trains_on_moved_copies_of_the_buffer():
    """A buffer whose samples are a single bright pixel in the corner: with replay_shift the
    model also sees it moved, so the weights of the pixels next to the corner change; without,
    only the corner's column of the first layer can change through the replayed samples."""
    model0 = build_model("mlp", (3, 3, 1), 4, [8, 8], seed=0)
    x = np.zeros((16, 3, 3, 1), np.float32)  # the task's samples carry no signal at all
    y = np.repeat([2, 3], 8)
    bx = np.zeros((4, 3, 3, 1), np.float32)
    bx[:, 0, 0, 0] = 1.0
    by = np.array([0, 0, 1, 1])
    changed = {}
    for k in (0, 1):
        model = build_model("mlp", (3, 3, 1), 4, [8, 8], seed=0)
        model.set_weights(model0.get_weights())
        kernel = model.layers[[type(l).__name__ for l in model.layers].index("Dense")].weights[0]
        before = kernel.numpy().copy()
        Trainer(model, TrainConfig(epochs=1, batch_new=8, batch_replay=8, replay_shift=k)).train_task(
            x, y, 4, task=1, seed=0, replay=(bx, by))
        rows = np.flatnonzero(np.any(kernel.numpy() != before, axis=1))  # flattened input pixels
        changed[k] = set(int(r) for r in rows)
    assert changed[0] == {0}
    assert {1, 3} <= changed[1]  # the pixels right of and below the corner


def test_stored_logits_add_the_mean_squared_difference_over_the_units_they_were_stored_for():
    # One step (16 new samples, batch 16): the loss returned is the one before the update. Stored
    # logits 1 above the model's own on units 0 and 1 and none for units 2 and 3: each of the 8
    # replayed samples adds weight * 1, the 16 new samples nothing.
    from tinycil.learn.train import MASKED_LOGIT

    x, y = _blobs([2, 3], 8, seed=11)
    buffer = _blobs([0, 1], 4, seed=12)
    losses = {}
    for weight in (0.0, 0.5):
        model = _task0_model()
        stored = logits(model, buffer[0]) + 1.0
        stored[:, 2:] = MASKED_LOGIT
        cfg = TrainConfig(epochs=1, batch_new=16, batch_replay=8, replay_logits_weight=weight)
        losses[weight] = Trainer(model, cfg).train_task(x, y, 4, task=1, seed=0, replay=buffer,
                                                        replay_logits=stored)["loss"]
    assert np.isclose(losses[0.5] - losses[0.0], 0.5 * 8 / 24, rtol=1e-4)


def test_stored_logits_hold_the_replayed_samples_answers():
    # Training on new classes pulls the old units' logits on the buffer away; the stored-logit
    # term pulls them back toward what was stored.
    x, y = _blobs([2, 3], 64, seed=13)
    buffer = _blobs([0, 1], 4, seed=14)
    drift = {}
    for weight in (0.0, 0.1):
        model = _task0_model()
        stored = logits(model, buffer[0])
        stored[:, 2:] = -1e9
        cfg = TrainConfig(epochs=4, batch_new=16, batch_replay=8, replay_logits_weight=weight)
        Trainer(model, cfg).train_task(x, y, 4, task=1, seed=0, replay=buffer, replay_logits=stored)
        drift[weight] = float(np.mean((logits(model, buffer[0])[:, :2] - stored[:, :2]) ** 2))
    assert drift[0.1] < 0.5 * drift[0.0]
