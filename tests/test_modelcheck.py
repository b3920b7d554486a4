"""A user's own model checked layer by layer against the device runtime: Keras models (.keras,
.h5) in several shapes pass, and what the runtime cannot run is refused with the layer's name,
its type and the supported list; a .tflite frozen part must be full int8."""

import numpy as np
import pytest

from tinycil.deploy.modelcheck import KERAS_LAYERS, ModelCheckError, check_model_file


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def _save(model, folder, name):
    path = folder / name
    model.save(path)
    return path


def _cnn2d(L, keras):
    return keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3, padding="same", activation="relu"),
                             L.MaxPooling2D(2), L.Flatten(), L.Dense(16, activation="relu"),
                             L.Dense(4)], name="cnn2d")


def test_supported_keras_models_of_several_shapes_pass(keras, tmp_path):
    L = keras.layers
    models = {
        "cnn2d.keras": _cnn2d(L, keras),
        "cnn1d.keras": keras.Sequential([L.Input((32, 3)), L.Conv1D(8, 5, activation="relu"),
                                         L.AveragePooling1D(2), L.GlobalAveragePooling1D(),
                                         L.Dense(6, activation="softmax")], name="cnn1d"),
        "dscnn.h5": keras.Sequential([L.Input((10, 10, 2)), L.Conv2D(8, 3, strides=2, activation="relu"),
                                      L.DepthwiseConv2D(3, padding="same", activation="relu"),
                                      L.Conv2D(8, 1, activation="relu"), L.GlobalAveragePooling2D(),
                                      L.Dense(3)], name="dscnn"),
    }
    for name, model in models.items():
        report = check_model_file(_save(model, tmp_path, name))
        assert not report.problems and report.format == "keras"
        assert report.input_shape == tuple(model.input_shape[1:])
        assert report.outputs == model.output_shape[-1]
        assert [kind for _, kind in report.layers] == [type(l).__name__ for l in model.layers]


def test_unsupported_layers_are_refused_with_name_type_and_the_supported_list(keras, tmp_path):
    L = keras.layers
    # Batch normalisation after a ReLU: no weight layer can absorb it (tinycil.learn.simplify).
    model = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu", name="conv"),
                              L.BatchNormalization(name="bn"), L.Flatten(),
                              L.Dense(8, activation="sigmoid", name="hidden"),
                              L.Dense(3, name="logits")])
    with pytest.raises(ModelCheckError) as err:
        check_model_file(_save(model, tmp_path, "bad.keras"))
    text = str(err.value)
    assert "\n" not in text
    assert "layer 'bn' (BatchNormalization): not supported by the device runtime here (batch " \
           "normalisation is folded into the weights only right after a convolution" in text
    assert "layer 'hidden' (Dense): activation sigmoid" in text
    assert "Supported layers: " + ", ".join(KERAS_LAYERS) in text
    assert "'conv'" not in text and "'logits'" not in text


def test_branches_and_a_last_layer_that_is_not_the_logits_are_refused(keras, tmp_path):
    L = keras.layers
    inp = L.Input((16,))
    a = L.Dense(8, activation="relu", name="a")(inp)
    b = L.Dense(8, activation="relu", name="b")(inp)
    out = L.Dense(2, name="out")(L.Add(name="join")([a, b]))
    with pytest.raises(ModelCheckError, match=r"layer 'join' \(Add\): not supported"):
        check_model_file(_save(keras.Model(inp, out), tmp_path, "branch.keras"))
    pooled = keras.Sequential([L.Input((4, 4, 2)), L.Conv2D(2, 1), L.GlobalAveragePooling2D(name="gap")])
    with pytest.raises(ModelCheckError, match=r"layer 'gap' \(GlobalAveragePooling2D\): the last layer"):
        check_model_file(_save(pooled, tmp_path, "nologits.keras"))


def test_convolutions_and_dense_layers_the_device_computes_otherwise_are_refused(keras, tmp_path):
    """Layers of a supported type whose settings the device would compute differently: refused
    with what to change, before prepare meets them (it used to stop with a shape error)."""
    L = keras.layers
    cases = {
        "causal": ((100, 6), [L.Conv1D(8, 3, padding="causal", name="c"), L.GlobalAveragePooling1D(),
                              L.Dense(4)], "layer 'c' (Conv1D): padding 'causal'"),
        "groups": ((8, 8, 2), [L.Conv2D(8, 3, groups=2, name="g"), L.Flatten(), L.Dense(4)],
                   "layer 'g' (Conv2D): grouped convolution (groups=2)"),
        "dense_on_map": ((100, 6), [L.Conv1D(8, 3, activation="relu"), L.Dense(16, name="per_step"),
                                    L.Flatten(), L.Dense(4)],
                         "layer 'per_step' (Dense): a Dense layer on a map"),
    }
    for name, (shape, layers, message) in cases.items():
        model = keras.Sequential([L.Input(shape)] + layers, name=name)
        with pytest.raises(ModelCheckError) as err:
            check_model_file(_save(model, tmp_path, f"{name}.keras"))
        assert message in str(err.value), (name, str(err.value))


def _tflite(model, int8: bool, batch=1) -> bytes:
    import keras
    import tensorflow as tf

    inp = keras.Input(batch_shape=(batch, *model.input_shape[1:]))
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, model(inp)))
    if int8:
        rng = np.random.default_rng(0)
        shape = tuple(model.input_shape[1:])

        def data():
            for _ in range(8):
                yield [rng.random((1, *shape), dtype=np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = data
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def test_tflite_frozen_part_must_be_full_int8_with_runtime_operators(keras, tmp_path):
    L = keras.layers
    backbone = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3, padding="same", activation="relu"),
                                 L.MaxPooling2D(2), L.Flatten(), L.Dense(16, activation="relu")])
    good = tmp_path / "backbone.tflite"
    good.write_bytes(_tflite(backbone, int8=True))
    report = check_model_file(good)
    assert report.format == "tflite" and not report.problems
    assert report.input_shape == (8, 8, 1) and report.outputs == 16
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= {kind for _, kind in report.layers}

    float_model = tmp_path / "float.tflite"
    float_model.write_bytes(_tflite(backbone, int8=False))
    with pytest.raises(ModelCheckError, match=r"float32, not int8: convert with full-integer"):
        check_model_file(float_model)

    unfixed = tmp_path / "unfixed.tflite"
    unfixed.write_bytes(_tflite(backbone, int8=True, batch=None))
    with pytest.raises(ModelCheckError, match=r"\(SHAPE\): not an operator .* batch_shape=\(1, ...\)"):
        check_model_file(unfixed)

    tanh = keras.Sequential([L.Input((8,)), L.Dense(8), L.Activation("tanh"), L.Dense(4)])
    odd = tmp_path / "tanh.tflite"
    odd.write_bytes(_tflite(tanh, int8=True))
    with pytest.raises(ModelCheckError, match=r"\(TANH\): not an operator of the int8 runtime.*"
                                              r"Supported int8 operators: CONV_2D"):
        check_model_file(odd)


def test_files_that_are_not_models(tmp_path):
    with pytest.raises(ModelCheckError, match="does not exist"):
        check_model_file(tmp_path / "missing.keras")
    (tmp_path / "model.onnx").write_bytes(b"\0")
    with pytest.raises(ModelCheckError, match=r"reads Keras models \(.keras, .h5, .hdf5\) and full-int8"):
        check_model_file(tmp_path / "model.onnx")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelCheckError, match=r"broken.keras is not a .keras model \(a .keras file "
                                              r"is a zip archive"):
        check_model_file(tmp_path / "broken.keras")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(ModelCheckError, match="broken.h5 is not an HDF5 Keras model"):
        check_model_file(tmp_path / "broken.h5")
    # A zip that holds no model: Keras's own words, after ours.
    import zipfile

    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as z:
        z.writestr("readme.txt", "no model here")
    with pytest.raises(ModelCheckError, match="empty.keras could not be loaded as a Keras model"):
        check_model_file(tmp_path / "empty.keras")


def test_check_model_command(keras, tmp_path):
    from click.testing import CliRunner

    from tinycil.cli import main

    L = keras.layers
    good = _save(_cnn2d(L, keras), tmp_path, "good.keras")
    result = CliRunner().invoke(main, ["check-model", str(good)])
    assert result.exit_code == 0, result.output
    assert "all run on the device" in result.output and "Conv2D" in result.output
    bad = _save(keras.Sequential([L.Input((4,)), L.LayerNormalization(name="norm"), L.Dense(2)]),
                tmp_path, "bad.keras")
    result = CliRunner().invoke(main, ["check-model", str(bad)])
    assert result.exit_code == 1
    assert "layer 'norm' (LayerNormalization): not supported" in result.output
    assert "Traceback" not in result.output


def _check_model_says(path) -> str:
    """`tinycil check-model PATH` refuses in one line, without a traceback; its message."""
    from click.testing import CliRunner

    from tinycil.cli import main

    result = CliRunner().invoke(main, ["check-model", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, TypeError)
    lines = [l for l in result.output.splitlines() if l.startswith("Error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_model_with_two_outputs_gets_the_plain_chain_refusal(keras, tmp_path):
    L = keras.layers
    i = L.Input((8, 8, 1))
    h = L.Dense(24, activation="relu")(L.Flatten()(i))
    path = _save(keras.Model(i, [L.Dense(10)(h), L.Dense(3)(h)], name="two"), tmp_path, "two.keras")
    assert "layer 'two' (Model): 1 inputs and 2 outputs: the device runs a plain chain with one " \
           "of each" in _check_model_says(path)


def test_an_input_shape_of_any_size_asks_for_a_fixed_one(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([L.Input((None, None, 1)), L.Conv2D(8, 3, activation="relu"),
                              L.GlobalAveragePooling2D(), L.Dense(10)])
    said = _check_model_says(_save(model, tmp_path, "any_size.keras"))
    assert "inputs of shape (None, None, 1)" in said and "needs a fixed one" in said
    assert "keras.Input(shape=...)" in said


def test_a_sequential_saved_without_an_input_shape_asks_for_one(keras, tmp_path):
    L = keras.layers
    path = _save(keras.Sequential([L.Flatten(), L.Dense(16, activation="relu"), L.Dense(10)]),
                 tmp_path, "unbuilt.keras")
    said = _check_model_says(path)
    assert "unbuilt.keras was saved without an input shape" in said
    assert "add keras.Input(shape=...)" in said
    # prepare and run leave it to prepare, which knows the data set's sample shape
    assert check_model_file(path, later_if_unbuilt=True) is None


def test_a_trailing_softmax_layer_is_dropped_as_a_softmax_activation_is(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(16, activation="relu"),
                              L.Dense(10, name="logits"), L.Softmax(name="sm")])
    report = check_model_file(_save(model, tmp_path, "softmax.keras"))
    assert [kind for _, kind in report.layers] == ["Flatten", "Dense", "Dense"]
    assert any(n.startswith("sm (Softmax): the output layer's softmax") for n in report.notes)
    # Elsewhere, or over another axis, a Softmax layer stays refused.
    inside = keras.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(16), L.Softmax(name="mid"),
                               L.Dense(10)])
    with pytest.raises(ModelCheckError, match=r"layer 'mid' \(Softmax\): not supported"):
        check_model_file(_save(inside, tmp_path, "inside.keras"))
    on_maps = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3), L.Softmax(axis=1, name="ax"),
                                L.Flatten(), L.Dense(10)])
    with pytest.raises(ModelCheckError, match=r"layer 'ax' \(Softmax\): not supported"):
        check_model_file(_save(on_maps, tmp_path, "axis.keras"))


def test_a_layer_name_tensorflow_cannot_train_is_named_with_rename_advice(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(8, 3, activation="relu",
                                                           name="my conv-1 ü"),
                              L.Flatten(name="flat.1"), L.Dense(10, name="out-2")])
    said = _check_model_says(_save(model, tmp_path, "names.keras"))
    assert "layer 'my conv-1 ü' (Conv2D): TensorFlow cannot train a layer with this name" in said
    assert "rename it" in said and "'flat.1'" not in said and "'out-2'" not in said


def test_a_reshape_to_a_flat_vector_is_a_flatten(keras, tmp_path):
    L = keras.layers
    flat = keras.Sequential([L.Input((8, 8, 1)), L.Reshape((64,), name="to_vector"),
                             L.Dense(16, activation="relu"), L.Dense(10)])
    report = check_model_file(_save(flat, tmp_path, "reshape.keras"))
    assert report.layers[0] == ("to_vector", "Flatten")
    assert any(n.startswith("to_vector (Reshape to (64,)): a Flatten") for n in report.notes)
    # the same outputs as the user's model
    from tinycil.learn.simplify import simplify_keras

    x = np.random.default_rng(0).standard_normal((3, 8, 8, 1)).astype(np.float32)
    simple, _ = simplify_keras(flat)
    np.testing.assert_allclose(simple.predict(x, verbose=0), flat.predict(x, verbose=0), rtol=1e-6)
    # any other reshape stays refused
    maps = keras.Sequential([L.Input((8, 8, 1)), L.Reshape((4, 16, 1), name="remap"), L.Flatten(),
                             L.Dense(10)])
    with pytest.raises(ModelCheckError, match=r"layer 'remap' \(Reshape\): not supported"):
        check_model_file(_save(maps, tmp_path, "remap.keras"))
