import numpy as np
import pytest

from tinycil.learn.models import (DEFAULT_WIDTHS, FAMILIES, ModelError, build_model, count_cost, model_widths,
                            split_model)
from tinycil.learn.sizing import WidthPolicy, flops_ratio, grow_model, growth_plan

SHAPES = {"mlp": (8, 8, 1), "cnn2d": (14, 14, 1), "cnn1d": (100, 6), "dscnn": (49, 10, 1)}


def test_cost_of_a_small_mlp_matches_a_hand_count():
    m = build_model("mlp", (4,), 2, [3, 2])
    c = count_cost(m)
    # dense1 4->3: 12 MACs; fwd 24 + 3 bias + 3 relu = 30; bwd 24 (dW) + 3 (db) + 3 (relu), no dx
    # dense2 3->2: 6 MACs;  fwd 12 + 2 + 2 = 16;           bwd 12 + 2 + 2 + 12 (dx) = 28
    # logits 2->2: 4 MACs;  fwd 8 + 2 = 10;                bwd 8 + 2 + 8 (dx) = 18
    assert c["params"] == 15 + 8 + 6 == m.count_params()
    assert c["macs"] == 22
    assert c["fwd_flops"] == 30 + 16 + 10
    assert c["bwd_flops"] == 30 + 28 + 18
    assert c["activation_bytes"] == 4 * (4 + 3 + 2 + 2)
    assert c["peak_inference_bytes"] == 4 * (4 + 3)


def test_cost_of_a_small_cnn2d_matches_a_hand_count():
    m = build_model("cnn2d", (4, 4, 1), 2, [2, 3, 4])
    c = count_cost(m)
    per = {l["name"]: l for l in c["layers"]}
    # conv1 3x3 same, 1->2 channels, 4x4 out: 32 outputs * 9 MACs
    assert per["conv1"]["macs"] == 288
    assert per["conv1"]["fwd_flops"] == 576 + 32 + 32 and per["conv1"]["bwd_flops"] == 576 + 32 + 32
    # pool1 2x2 -> 2x2x2: 3 comparisons per output; no backward arithmetic
    assert per["pool1"]["fwd_flops"] == 24 and per["pool1"]["bwd_flops"] == 0
    # conv2 3x3 same over 2 channels -> 2x2x3 = 12 outputs * 18 MACs
    assert per["conv2"]["macs"] == 216
    assert per["conv2"]["fwd_flops"] == 432 + 12 + 12 and per["conv2"]["bwd_flops"] == 432 + 12 + 12 + 432
    assert per["pool2"]["fwd_flops"] == 9
    assert per["flatten"]["fwd_flops"] == 0
    assert per["dense1"]["fwd_flops"] == 24 + 4 + 4 and per["dense1"]["bwd_flops"] == 24 + 4 + 4 + 24
    assert per["logits"]["fwd_flops"] == 16 + 2 and per["logits"]["bwd_flops"] == 16 + 2 + 16
    assert c["params"] == 20 + 57 + 16 + 10 == m.count_params()
    assert c["fwd_flops"] == 640 + 24 + 456 + 9 + 32 + 18
    assert c["bwd_flops"] == 640 + 888 + 56 + 34
    assert c["activation_bytes"] == 4 * (16 + 32 + 8 + 12 + 3 + 3 + 4 + 2)


def test_cost_of_average_pooling_matches_a_hand_count():
    # A user's model may pool by averaging (tinycil check-model accepts it): before a weight layer
    # it has no backward, after one it hands every gradient back over its window.
    import keras

    m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.AveragePooling2D(2, name="avg0"),
                          keras.layers.Conv2D(2, 1, name="conv"), keras.layers.AveragePooling2D(2, name="avg1"),
                          keras.layers.Flatten(), keras.layers.Dense(3, name="logits")])
    per = {l["name"]: l for l in count_cost(m)["layers"]}
    # avg0: 4 outputs (2x2x1), 4 ops each; avg1: 2 outputs (1x1x2), 4 ops each
    assert per["avg0"]["fwd_flops"] == 16 and per["avg0"]["bwd_flops"] == 0
    assert per["avg1"]["fwd_flops"] == 8 and per["avg1"]["bwd_flops"] == 8


@pytest.mark.parametrize("family", FAMILIES)
def test_full_width_models_are_microcontroller_sized(family):
    m = build_model(family, SHAPES[family], 10, DEFAULT_WIDTHS[family])
    c = count_cost(m)
    assert 2_000 < c["params"] < 60_000
    assert c["params"] == m.count_params()
    assert model_widths(m) == DEFAULT_WIDTHS[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_split_model_shares_weights_and_composes(family):
    m = build_model(family, SHAPES[family], 4, DEFAULT_WIDTHS[family], seed=0)
    backbone, tail = split_model(m, 2)
    x = np.random.default_rng(0).normal(size=(5,) + SHAPES[family]).astype(np.float32)
    np.testing.assert_allclose(tail(backbone(x)).numpy(), m(x).numpy(), atol=1e-5)
    assert [l.name for l in tail.layers][-1] == "logits"
    assert count_cost(backbone)["params"] + count_cost(tail)["params"] == count_cost(m)["params"]


def test_split_puts_conv_layers_in_the_tail_and_may_leave_no_backbone():
    m = build_model("cnn2d", (8, 8, 1), 4, [4, 4, 4])
    backbone, tail = split_model(m, 3)  # conv2, pool2, flatten, dense1, logits
    assert [type(l).__name__ for l in tail.layers][0] == "Conv2D"
    assert tuple(tail.input_shape[1:]) == (4, 4, 4) == tuple(backbone.output_shape[1:])
    backbone, tail = split_model(m, 4)  # everything trains: the backbone is the identity
    assert tuple(backbone.output_shape[1:]) == (8, 8, 1)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(tail(backbone(x)).numpy(), m(x).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="between 1 and 4"):
        split_model(m, 5)


def _perturb(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:  # non-zero biases too, as after training
        w.assign(w.numpy() + rng.normal(0, 0.1, size=w.shape).astype(np.float32))


@pytest.mark.parametrize("family", FAMILIES)
def test_growth_preserves_old_class_logits_and_predictions(family):
    policy = WidthPolicy(DEFAULT_WIDTHS[family])
    small = build_model(family, SHAPES[family], 2, policy.widths(2, 10), seed=1)
    _perturb(small, 1)
    x = np.random.default_rng(2).normal(size=(64,) + SHAPES[family]).astype(np.float32)
    before = small(x).numpy()
    wider = policy.widths(6, 10)
    grown = grow_model(small, wider, 6, seed=3)
    after = grown(x).numpy()
    assert model_widths(grown) == wider and after.shape == (64, 6)
    assert all(a > b for a, b in zip(wider, policy.widths(2, 10)))  # the test really grows every layer
    assert np.max(np.abs(after[:, :2] - before)) < 1e-6
    assert (after[:, :2].argmax(1) == before.argmax(1)).all()
    assert np.all(after[:, 2:] == 0.0)  # new classes start at logit 0
    # New hidden units are live (random incoming weights), not dead zeros.
    first = [l for l in grown.layers if l.weights][0]
    k = first.weights[0].numpy()
    assert np.abs(k[..., policy.widths(2, 10)[0]:]).sum() > 0


def test_growth_refuses_to_shrink():
    m = build_model("mlp", (8,), 2, [8, 8])
    with pytest.raises(ValueError, match="shrink"):
        grow_model(m, [4, 8], 2)


def test_width_policy_and_plan():
    p = WidthPolicy([16, 32, 64])
    assert p.widths(10, 10) == [16, 32, 64]
    ws = [p.widths(c, 10) for c in (2, 4, 6, 8, 10)]
    assert all(all(a <= b for a, b in zip(u, v)) for u, v in zip(ws, ws[1:]))
    assert WidthPolicy([16, 32, 64], schedule="fixed").widths(2, 10) == [16, 32, 64]
    plan = growth_plan(p, [[0, 1], [2, 3]], 4)
    assert plan[0]["classes_seen"] == 2 and plan[1]["widths"] == [16, 32, 64]
    assert WidthPolicy.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("family", ["cnn2d", "cnn1d", "dscnn"])
def test_default_schedule_meets_the_43_percent_flops_yardstick(family):
    ratio = flops_ratio(family, SHAPES[family], 10, 5, WidthPolicy(DEFAULT_WIDTHS[family]))
    assert ratio <= 0.43
    linear = flops_ratio(family, SHAPES[family], 10, 5, WidthPolicy(DEFAULT_WIDTHS[family], schedule="linear"))
    assert linear > 0.5
