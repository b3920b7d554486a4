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
