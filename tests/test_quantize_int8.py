"""Full-int8 quantisation of a backbone and the read-back of its layers."""

import numpy as np
import pytest

from tinycil.learn.quantize import (
    QuantizeError,
    dequantize,
    dequantized_weights,
    quantize_backbone,
    quantize_inputs,
    read_layers,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN trained briefly on the 8x8 digits, split into backbone and head."""
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    x_train, y_train, x_test = x[:1400], y[:1400], x[1400:]

    backbone = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw"),
            keras.layers.AveragePooling2D(2, name="avg"),
            keras.layers.Conv2D(12, 1, strides=1, padding="valid", activation="relu", name="pw"),
            keras.layers.MaxPooling2D(2, name="max"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(16, activation="relu", name="fc"),
        ],
        name="backbone",
    )
    model = keras.Sequential([backbone, keras.layers.Dense(10, name="head")])
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    q = quantize_backbone(backbone, x_train)
    return backbone, q, x_test


def test_interpreter_input_and_output_are_int8(trained):
    _, q, _ = trained
    interp = q.interpreter()
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    assert q.tflite_bytes[4:8] == b"TFL3"
    assert q.input_shape == (8, 8, 1) and q.output_shape == (16,)
    # Inputs in [0, 1]: the calibrated input range maps 0 to -128.
    assert q.input_zero_point == -128
    assert q.input_scale == pytest.approx(1 / 255, rel=0.01)


def test_int8_outputs_agree_with_float_backbone(trained):
    backbone, q, x_test = trained
    want = np.asarray(backbone(x_test, training=False))
    got = q.run_float(x_test)
    steps = np.abs(got - want) / q.output_scale
    assert steps.mean() < 1.0, steps.mean()
    assert np.percentile(steps, 99) <= 3.0, np.percentile(steps, 99)
    # The int8 model ranks the latent features as the float one does.
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_run_rejects_float_input_with_a_fix(trained):
    _, q, x_test = trained
    with pytest.raises(QuantizeError, match="quantize_inputs"):
        q.run(x_test[:2])
    single = q.run(quantize_inputs(x_test[0], q.input_scale, q.input_zero_point))
    assert single.shape == (16,) and single.dtype == np.int8


def test_quantize_dequantize_round_trip_within_half_a_step():
    rng = np.random.default_rng(0)
    scale, zp = 0.0123, -7
    x = rng.uniform((-128 - zp) * scale, (127 - zp) * scale, size=10_000).astype(np.float32)
    q = quantize_inputs(x, scale, zp)
    assert q.dtype == np.int8
    back = dequantize(q, scale, zp)
    assert back.dtype == np.float32
    assert np.max(np.abs(back - x)) <= scale / 2 + 1e-6
    # Out of range saturates; halves round away from zero as TFLite's QUANTIZE does.
    assert quantize_inputs([1e6, -1e6], scale, zp).tolist() == [127, -128]
    assert quantize_inputs([0.5, -0.5, 1.5], 1.0, 0).tolist() == [1, -1, 2]


def test_layer_list_ops_and_options(trained):
    _, q, _ = trained
    layers = read_layers(q.tflite_bytes)
    ops = [layer["op"] for layer in layers if layer["op"] != "RESHAPE"]
    assert ops == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "CONV_2D",
        "MAX_POOL_2D",
        "FULLY_CONNECTED",
    ]
    by_op = {}
    for layer in layers:
        by_op.setdefault(layer["op"], []).append(layer)
    conv1, pw = by_op["CONV_2D"]
    assert conv1["options"]["padding"] == "SAME" and conv1["options"]["activation"] == "RELU"
    assert (conv1["options"]["stride_h"], conv1["options"]["stride_w"]) == (1, 1)
    assert pw["options"]["padding"] == "VALID"
    assert conv1["input"]["shape"] == (1, 8, 8, 1) and conv1["output"]["shape"] == (1, 8, 8, 8)
    dw = by_op["DEPTHWISE_CONV_2D"][0]
    assert dw["options"]["activation"] == "RELU6" and dw["options"]["depth_multiplier"] == 1
    assert dw["weight_quantized_dimension"] == 3
    pool = by_op["AVERAGE_POOL_2D"][0]
    assert (pool["options"]["filter_h"], pool["options"]["stride_h"]) == (2, 2)
    assert pool["output"]["shape"] == (1, 4, 4, 8)
    # Consecutive layers are chained tensor to tensor, ending in the model's output.
    for a, b in zip(layers, layers[1:]):
        assert a["output"]["index"] == b["input"]["index"]
    assert layers[-1]["output"]["scale"] == pytest.approx(q.output_scale)
    assert layers[0]["input"]["zero_point"] == q.input_zero_point
    for layer in layers:
        if layer["weights"] is not None:
            assert layer["weights"].dtype == np.int8 and layer["bias"].dtype == np.int32
            assert np.all(layer["weight_zero_points"] == 0)  # symmetric per-channel weights


def test_layer_weights_dequantised_match_keras_per_channel(trained):
    backbone, q, _ = trained
    layers = [layer for layer in read_layers(q.tflite_bytes) if layer["weights"] is not None]
    keras_layers = [layer for layer in backbone.layers if layer.get_weights()]
    assert len(layers) == len(keras_layers)
    for layer, kl in zip(layers, keras_layers):
        kernel, bias = kl.get_weights()
        if layer["op"] == "CONV_2D":  # Keras [kh, kw, in, out] -> TFLite [out, kh, kw, in]
            want = kernel.transpose(3, 0, 1, 2)
        elif layer["op"] == "DEPTHWISE_CONV_2D":  # [kh, kw, in, mult] -> [1, kh, kw, in*mult]
            want = kernel.reshape(1, kernel.shape[0], kernel.shape[1], -1)
        else:  # FULLY_CONNECTED: [in, out] -> [out, in]
            want = kernel.T
        got = dequantized_weights(layer)
        assert got.shape == want.shape, kl.name
        axis = layer["weight_quantized_dimension"]
        shape = [1] * got.ndim
        shape[axis] = -1
        step = layer["weight_scales"].reshape(shape)
        assert np.all(np.abs(got - want) <= step * 1.0001), kl.name
        assert len(layer["weight_scales"]) == want.shape[axis]  # per channel
        got_bias = layer["bias"] * layer["bias_scales"]
        assert np.all(np.abs(got_bias - bias) <= layer["bias_scales"] * 1.0001), kl.name


def test_converter_output_does_not_reach_the_user(trained, capfd):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
    capfd.readouterr()
    q = quantize_backbone(model, np.random.default_rng(0).normal(size=(32, 4)).astype("float32"))
    out, err = capfd.readouterr()
    assert q.output_shape == (3,)
    assert "Endpoint" not in out + err and "fully_quantize" not in out + err


def test_representative_data_of_the_wrong_shape_is_refused(trained):
    backbone, _, _ = trained
    with pytest.raises(QuantizeError, match=r"shape \[n, 8, 8, 1\]"):
        quantize_backbone(backbone, np.zeros((4, 8, 8), np.float32))


def test_signal_backbone_reads_back_constant_operands():
    """Conv1D becomes CONV_2D between reshapes and global pooling becomes MEAN; the exporter
    needs their constant operands (shapes, axes)."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((24, 3)),
            keras.layers.Conv1D(6, 5, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(5, activation="relu"),
        ]
    )
    x = np.random.default_rng(0).normal(size=(64, 24, 3)).astype(np.float32)
    q = quantize_backbone(model, x)
    layers = q.layers()
    ops = [layer["op"] for layer in layers]
    assert "CONV_2D" in ops and "MEAN" in ops and ops[-1] == "FULLY_CONNECTED"
    mean = layers[ops.index("MEAN")]
    axes = [t for t in mean["inputs"][1:] if t is not None and t["data"] is not None]
    assert axes and sorted(np.ravel(axes[0]["data"]).tolist()) in ([1], [1, 2])
    assert mean["inputs"][0]["data"] is None  # an activation, not a constant
    for layer in layers:
        if layer["op"] == "RESHAPE":
            assert int(np.prod(layer["output"]["shape"])) == int(np.prod(layer["input"]["shape"]))
    steps = np.abs(q.run_float(x) - np.asarray(model(x))) / q.output_scale
    assert np.percentile(steps, 99) <= 3.0
