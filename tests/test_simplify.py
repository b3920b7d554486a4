"""A user's Keras model put in the form the device runs (tinycil.learn.simplify): dropout dropped,
batch normalisation and ReLU layers folded into the layer before them, the same function at
inference; what cannot be folded is left for the check to name."""

import numpy as np
import pytest

from tinycil.deploy.modelcheck import ModelCheckError, check_model_file
from tinycil.learn.simplify import simplify_keras


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def _random_statistics(model, rng):
    """Batch-norm layers with moving statistics and scales far from their initial values, so a
    fold that ignored any of them would change the outputs."""
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        values = []
        for w in layer.weights:
            name = w.path.split("/")[-1]
            if name == "moving_variance":
                values.append(rng.uniform(0.3, 3.0, w.shape))
            elif name == "gamma":
                values.append(rng.normal(1.0, 0.5, w.shape))
            else:  # beta, moving_mean
                values.append(rng.normal(0.0, 0.7, w.shape))
        layer.set_weights([v.astype(np.float32) for v in values])


def test_folded_model_computes_the_same_function(keras):
    L = keras.layers
    rng = np.random.default_rng(3)
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        L.Conv2D(6, 3, padding="same", use_bias=False, name="conv"), L.BatchNormalization(name="bn1"),
        L.ReLU(name="relu1"), L.MaxPooling2D(2),
        L.Conv2D(6, 1, name="mix"), L.MaxPooling2D(2), L.ReLU(name="late_relu"),
        L.DepthwiseConv2D(3, padding="same", name="dw"), L.BatchNormalization(center=False, name="bn2"),
        L.Activation("relu", name="act2"),
        L.Flatten(), L.Dropout(0.5, name="drop"), L.GaussianNoise(0.1, name="noise"),
        L.Dense(12, name="hidden"), L.BatchNormalization(scale=False, name="bn3"), L.ReLU(),
        L.Activation("linear", name="lin"),
        L.Dense(5, name="logits"), L.Activation("softmax", name="probs")])
    _random_statistics(model, rng)
    simple, notes = simplify_keras(model)
    assert [type(l).__name__ for l in simple.layers] == [
        "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "DepthwiseConv2D", "Flatten", "Dense",
        "Dense"]
    assert [simple.get_layer(n).activation.__name__ for n in ("conv", "mix", "dw", "hidden", "logits")] \
        == ["relu", "relu", "relu", "relu", "softmax"]
    assert len(notes) == 11, notes
    assert "late_relu (ReLU): folded into mix as its ReLU (max pooling and ReLU commute)" in notes
    assert "bn1 (BatchNormalization): folded into conv's weights and bias (moving statistics)" in notes
    assert any(n.startswith("drop (Dropout): dropped") for n in notes)
    x = rng.normal(size=(32, 8, 8, 2)).astype(np.float32)
    want = np.asarray(model(x, training=False))
    got = np.asarray(simple(x, training=False))
    assert np.abs(got - want).max() < 1e-5
    # ... and the batch norms did matter: without their fold the outputs differ.
    assert np.abs(np.asarray(model(x, training=False)) - np.asarray(
        keras.Sequential([keras.Input((8, 8, 2))] + [l for l in model.layers
                                                     if type(l).__name__ != "BatchNormalization"])(
            x, training=False))).max() > 1e-2


def test_a_layer_without_a_bias_gets_a_zero_one(keras):
    L = keras.layers
    rng = np.random.default_rng(5)
    model = keras.Sequential([keras.Input((6, 2)), L.Conv1D(4, 3, use_bias=False, name="c"),
                              L.GlobalAveragePooling1D(), L.Dense(3, use_bias=False, name="out")])
    simple, notes = simplify_keras(model)
    assert notes == ["c (Conv1D): given a zero bias (the device's layers have one)",
                     "out (Dense): given a zero bias (the device's layers have one)"]
    assert [len(l.get_weights()) for l in simple.layers] == [2, 0, 2]
    x = rng.normal(size=(8, 6, 2)).astype(np.float32)
    assert np.abs(np.asarray(simple(x)) - np.asarray(model(x))).max() < 1e-6


def test_a_separable_convolution_becomes_its_depthwise_and_pointwise_halves(keras):
    L = keras.layers
    rng = np.random.default_rng(7)
    model = keras.Sequential([
        keras.Input((9, 9, 3)),
        L.SeparableConv2D(6, 3, padding="same", use_bias=False, name="sep"),
        L.BatchNormalization(name="bn"), L.ReLU(name="r"), L.MaxPooling2D(2),
        L.SeparableConv2D(5, 3, strides=2, padding="valid", activation="relu", name="sep2"),
        L.GlobalAveragePooling2D(), L.Dense(4, name="out")])
    _random_statistics(model, rng)
    for layer in model.layers:   # a bias far from its zero start, so dropping it would show
        if layer.name == "sep2":
            w = layer.get_weights()
            layer.set_weights(w[:-1] + [rng.normal(0.0, 1.0, w[-1].shape).astype(np.float32)])
    simple, notes = simplify_keras(model)
    assert [(l.name, type(l).__name__) for l in simple.layers] == [
        ("sep_depthwise", "DepthwiseConv2D"), ("sep_pointwise", "Conv2D"),
        (simple.layers[2].name, "MaxPooling2D"),
        ("sep2_depthwise", "DepthwiseConv2D"), ("sep2_pointwise", "Conv2D"),
        (simple.layers[5].name, "GlobalAveragePooling2D"), ("out", "Dense")]
    assert simple.get_layer("sep2_depthwise").strides == (2, 2)
    assert simple.get_layer("sep_pointwise").activation.__name__ == "relu"
    assert "sep (SeparableConv2D): split into sep_depthwise (DepthwiseConv2D) and sep_pointwise " \
           "(1x1 Conv2D), the same function" in notes
    assert "bn (BatchNormalization): folded into sep_pointwise's weights and bias (moving " \
           "statistics)" in notes
    x = rng.normal(size=(16, 9, 9, 3)).astype(np.float32)
    assert np.abs(np.asarray(simple(x)) - np.asarray(model(x, training=False))).max() < 1e-5


def test_a_one_dimensional_separable_convolution_splits_the_same_way(keras):
    L = keras.layers
    rng = np.random.default_rng(11)
    model = keras.Sequential([
        keras.Input((20, 6)),
        L.SeparableConv1D(8, 5, padding="same", use_bias=False, name="sep"),
        L.BatchNormalization(name="bn"), L.ReLU(name="r"),
        L.DepthwiseConv1D(3, strides=2, use_bias=False, name="dw"), L.BatchNormalization(name="bn2"),
        L.GlobalAveragePooling1D(), L.Dense(4, name="out")])
    _random_statistics(model, rng)
    simple, notes = simplify_keras(model)
    assert [(l.name, type(l).__name__) for l in simple.layers] == [
        ("sep_depthwise", "DepthwiseConv1D"), ("sep_pointwise", "Conv1D"),
        ("dw", "DepthwiseConv1D"), (simple.layers[3].name, "GlobalAveragePooling1D"),
        ("out", "Dense")]
    assert simple.get_layer("sep_pointwise").kernel_size == (1,)
    assert "sep (SeparableConv1D): split into sep_depthwise (DepthwiseConv1D) and sep_pointwise " \
           "(kernel-1 Conv1D), the same function" in notes
    # batch norm after a depthwise layer scales each channel's kernel
    assert "bn2 (BatchNormalization): folded into dw's weights and bias (moving statistics)" in notes
    x = rng.normal(size=(16, 20, 6)).astype(np.float32)
    assert np.abs(np.asarray(simple(x)) - np.asarray(model(x, training=False))).max() < 1e-5


def test_dilated_or_multiplied_depthwise_halves_are_refused(keras, tmp_path):
    L = keras.layers
    cases = {
        "dilated": (L.SeparableConv2D(4, 3, dilation_rate=2, padding="same", name="s"),
                    "layer 's_depthwise' (DepthwiseConv2D): dilated convolution"),
        "dilated_dw": (L.DepthwiseConv2D(3, dilation_rate=2, padding="same", name="dw"),
                       "layer 'dw' (DepthwiseConv2D): dilated convolution"),
        "multiplier": (L.SeparableConv2D(4, 3, depth_multiplier=2, name="m"),
                       "layer 'm_depthwise' (DepthwiseConv2D): depth multiplier 2 (1 only)"),
        "dilated_1d": (L.SeparableConv1D(4, 3, dilation_rate=2, padding="same", name="s1"),
                       "layer 's1_depthwise' (DepthwiseConv1D): dilated convolution"),
        "multiplier_1d": (L.DepthwiseConv1D(3, depth_multiplier=3, name="m1"),
                          "layer 'm1' (DepthwiseConv1D): depth multiplier 3 (1 only)"),
    }
    for name, (layer, message) in cases.items():
        path = tmp_path / f"{name}.keras"
        shape = (8, 2) if name.endswith("_1d") else (8, 8, 2)
        keras.Sequential([keras.Input(shape), layer, L.Flatten(), L.Dense(3)]).save(path)
        with pytest.raises(ModelCheckError) as err:
            check_model_file(path)
        assert message in str(err.value), (name, str(err.value))


def test_a_model_with_nothing_to_fold_is_returned_as_it_is(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((16,)), L.Dense(8, activation="relu"), L.Dense(3)])
    same, notes = simplify_keras(model)
    assert same is model and notes == []


def test_what_cannot_be_folded_is_named_by_the_check(keras, tmp_path):
    L = keras.layers
    cases = {
        # after a ReLU the batch norm has no weight layer to go into
        "bn_after_relu": ([L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(name="bn"),
                           L.Flatten(), L.Dense(3)],
                          "layer 'bn' (BatchNormalization): not supported by the device runtime here"),
        # a capped ReLU is not the device's ReLU
        "relu6_layer": ([L.Flatten(), L.Dense(8), L.ReLU(max_value=6.0, name="r6"), L.Dense(3)],
                        "layer 'r6' (ReLU): ReLU with max_value=6.0, negative_slope=0, threshold=0: "
                        "the device runs max(x, 0) only; use ReLU() without arguments"),
        # a ReLU after average pooling: it does not commute with the ReLU
        "relu_after_pool": ([L.Conv2D(4, 3), L.AveragePooling2D(2), L.ReLU(name="late"), L.Flatten(),
                             L.Dense(3)], "layer 'late' (ReLU): not supported"),
    }
    for name, (layers, message) in cases.items():
        path = tmp_path / f"{name}.keras"
        keras.Sequential([keras.Input((8, 8, 1))] + layers, name=name).save(path)
        with pytest.raises(ModelCheckError) as err:
            check_model_file(path)
        assert message in str(err.value), (name, str(err.value))


def test_check_model_lists_what_it_folded(keras, tmp_path):
    from click.testing import CliRunner

    from tinycil.cli import main

    L = keras.layers
    path = tmp_path / "usual.keras"
    keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, name="c"), L.BatchNormalization(name="bn"),
                      L.ReLU(name="r"), L.Flatten(), L.Dropout(0.3, name="d"), L.Dense(3)]).save(path)
    res = CliRunner().invoke(main, ["check-model", str(path)])
    assert res.exit_code == 0, res.output
    assert "all run on the device" in res.output
    assert "bn (BatchNormalization): folded into c's weights and bias" in res.output
    assert "r (ReLU): folded into c as its ReLU" in res.output
    assert "d (Dropout): dropped" in res.output
