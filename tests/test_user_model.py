"""Your own model (`prepare/run --model FILE`): a Keras model built and saved by the test, and a
full-int8 .tflite frozen part, each prepared and run on the emulated board (real PlatformIO build,
QEMU, the serial protocol) with the device equal to the host twin; and models that must be
refused, with a clean one-line message, before any training."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import copy_firmware_project
from tinycil.cli import main

DIGITS = (8, 8, 1)


def keras_model(tmp, name, layers, input_shape=DIGITS):
    import keras

    model = keras.Sequential([keras.Input(input_shape)] + layers, name=name)
    path = tmp / f"{name}.keras"
    model.save(path)
    return path


def own_cnn(tmp, separable: bool = False):
    """A user's small CNN written as Keras users write them: convolution, batch normalisation and
    a ReLU layer (folded into the convolution), dropout (dropped), a dense layer without a bias
    (given a zero one), a softmax output (dropped: the device works on logits). ``separable``
    adds a separable convolution after the first one (split into its depthwise and 1x1 halves)."""
    import keras

    L = keras.layers
    sep = [L.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")] if separable else []
    return keras_model(tmp, "my_cnn", [
        L.Conv2D(8, 3, padding="same", name="c1"), L.BatchNormalization(name="bn1"),
        L.ReLU(name="relu1")] + sep + [L.MaxPooling2D(2, name="p1"), L.Flatten(name="f"),
        L.Dropout(0.2, name="drop"), L.Dense(24, activation="relu", use_bias=False, name="d1"),
        L.Dense(10, activation="softmax", name="out")])


def own_cnn1d(tmp):
    """A user's model for a sensor series (basic-motions: 100 steps x 6 channels): a separable
    1-D convolution with batch normalisation and a ReLU layer, then a depthwise and a kernel-1
    convolution of its own, global average pooling and the logits."""
    import keras

    L = keras.layers
    return keras_model(tmp, "my_cnn1d", [
        L.Conv1D(8, 5, padding="same", activation="relu", name="c1"),
        L.SeparableConv1D(16, 5, padding="same", name="sep"), L.BatchNormalization(name="bn"),
        L.ReLU(name="r"), L.MaxPooling1D(2, name="p1"),
        L.DepthwiseConv1D(3, padding="same", activation="relu", name="dw"),
        L.Conv1D(16, 1, activation="relu", name="pw"),
        L.GlobalAveragePooling1D(name="gap"), L.Dense(4, name="out")], input_shape=(100, 6))


def frozen_tflite(tmp):
    """A full-int8 frozen part (conv, pool, dense) as a user brings it: trained (briefly, with a
    throw-away classifier on top) and converted with batch size 1."""
    import keras

    from tinycil.datasets import load_dataset

    L = keras.layers
    keras.utils.set_random_seed(0)
    layers = [L.Conv2D(8, 3, padding="same", activation="relu"), L.MaxPooling2D(2), L.Flatten(),
              L.Dense(16, activation="relu")]
    ds = load_dataset("digits", seed=0)
    trainer = keras.Sequential([keras.Input(DIGITS)] + layers + [L.Dense(ds.num_classes)])
    trainer.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.fit(ds.x_train, ds.y_train, epochs=5, batch_size=32, verbose=0)
    part = keras.Sequential([keras.Input(DIGITS, batch_size=1)] + layers)
    return int8_tflite(part, ds.x_train[:64], tmp / "frozen.tflite")


def int8_tflite(part, x, path):
    """`part` converted as a user brings a frozen part: full int8 (input and output too), the
    representative data set `x`; written to `path`."""
    import tensorflow as tf

    x = np.asarray(x, np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(part)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s[None]] for s in x)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


def refused(args) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args])
    shown = f"{args}: exit {res.exit_code}\n{res.output}"
    assert res.exit_code not in (0, None), shown
    assert "Traceback" not in res.output, shown
    assert res.exception is None or isinstance(res.exception, SystemExit), shown
    return res.output


@pytest.mark.parametrize("command", [["prepare", "--no-simulate"], ["run", "--board", "mps2_an500"]])
def test_an_unsupported_layer_is_named_before_any_work(tmp_path, command):
    import keras

    L = keras.layers
    path = keras_model(tmp_path, "with_bn", [L.Flatten(), L.Dense(16, activation="relu"),
                                             L.BatchNormalization(name="bn"),
                                             L.Dense(10)])
    out = refused(command + ["-d", "digits", "--model", path, "-o", tmp_path / "run"])
    assert "layer 'bn' (BatchNormalization)" in out and "Supported layers:" in out
    assert not (tmp_path / "run").exists()


def test_a_model_for_other_samples_is_refused(tmp_path):
    import keras

    path = keras_model(tmp_path, "for_mnist", [keras.layers.Flatten(), keras.layers.Dense(10)],
                       input_shape=(28, 28, 1))
    out = refused(["prepare", "--no-simulate", "-d", "digits", "--model", path, "-o", tmp_path / "r"])
    assert "inputs of shape (28, 28, 1)" in out and "samples of shape (8, 8, 1)" in out
    assert not (tmp_path / "r" / "config.json").exists()


def test_only_the_output_layer_trainable_grows_output_rows_only_and_says_so(tmp_path):
    from tinycil.learn.usermodel import UserModel

    said = []
    user = UserModel(own_cnn(tmp_path), DIGITS, 2, 1, echo=said.append)
    plan = user.plan([[0, 1], [2, 3], [4, 5]], known=1)
    assert [e["widths"] for e in plan] == [[8, 24]] * 3 and [e["outputs"] for e in plan] == [2, 4, 6]
    assert any("output rows only" in s for s in said)


class _CutChosen(Exception):
    """Ends prepare_run at its model check, after the cut and before any training."""


def auto_cut(tmp, model_file, board) -> tuple[int, list[str]]:
    """prepare_run's --trainable auto with `board`'s memory plan on digits: (layers, what it said)."""
    from tinycil.deploy.cut import cut_chooser
    from tinycil.learn.prepare import prepare_run

    said, chosen = [], []

    def stop(model, plan, sizing):
        chosen.append(sizing["tail_layers"])
        raise _CutChosen

    with pytest.raises(_CutChosen):
        prepare_run("digits", tmp / "run", quick=True, progress=False, echo=said.append,
                    tail_layers="auto", choose_cut=cut_chooser(board), check_model=stop,
                    model_file=model_file)
    return chosen[0], [str(s) for s in said]


def test_auto_cut_of_your_model_is_the_memory_plans_for_the_board(tmp_path):
    from tinycil.deploy.boards import load_board

    path = own_cnn(tmp_path)  # conv 8, dense 24, logits: the dense layer grows to 94 units
    n, said = auto_cut(tmp_path, path, load_board("mps2_an500"))
    # 320 KB hold the dense tail at its final size; the conv growing too would not fit
    assert n == 2, said
    reason = next(s for s in said if s.startswith("trainable layers:"))
    assert "trainable layers: 2 of 3 (auto: the most whose arena at the final size fits mps2_an500" \
        in reason and "; 3 would need" in reason, reason
    assert "growth for new classes: hidden units of the trainable layers and output rows" in said

    # The same model for a board with a third of the RAM: only the logits train.
    manifest = json.loads(load_board("mps2_an500").manifest.read_text())
    manifest["tinycil"]["memory"]["ram_bytes"] = 100 * 1024
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "small_ram.json").write_text(json.dumps(manifest))
    n, said = auto_cut(tmp_path, path, load_board("small_ram", root=tmp_path))
    assert n == 1, said
    assert any(s.startswith("trainable layers: 1 of 3 (auto: the most whose arena at the final "
                            "size fits small_ram: RAM") and "; 2 would need" in s for s in said), said
    assert any("growth for new classes: output rows only" in s for s in said), said


def test_auto_cut_without_a_board_takes_your_models_dense_tail(tmp_path):
    from tinycil.learn.usermodel import UserModel

    said = []
    user = UserModel(own_cnn(tmp_path), DIGITS, 2, "auto", echo=said.append)
    assert user.tail_layers == "auto" and user.dense_tail() == 2
    assert any("your model's dense tail" in s for s in said)


def test_too_few_outputs_for_the_known_classes_are_refused(tmp_path):
    import keras

    path = keras_model(tmp_path, "one_out", [keras.layers.Flatten(), keras.layers.Dense(1)])
    out = refused(["prepare", "--no-simulate", "-d", "digits", "--model", path, "-o", tmp_path / "r"])
    assert "1 outputs" in out and "2 classes" in out


def test_a_float_tflite_is_refused(tmp_path):
    import keras
    import tensorflow as tf

    part = keras.Sequential([keras.Input(DIGITS, batch_size=1), keras.layers.Flatten(),
                             keras.layers.Dense(4)])
    path = tmp_path / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(part).convert())
    out = refused(["prepare", "--no-simulate", "-d", "digits", "--model", path, "-o", tmp_path / "r"])
    assert "not int8" in out


@pytest.fixture(scope="module")
def project(root, tmp_path_factory):
    os.environ["TINYCIL_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    return copy_firmware_project(root, tmp_path_factory.mktemp("project"))


def run_own(project, tmp, model_file, dataset="digits", **prepare):
    from tinycil.cli.run import run_end_to_end

    lines = []
    run_dir = tmp / "run"
    results = run_end_to_end(dataset, "mps2_an500", run_dir, quick=True, epochs=2,
                             distill_iters=10, root=project, progress=False, echo=lines.append,
                             prepare_kwargs={"model_file": model_file, **prepare})
    return run_dir, results, "\n".join(str(l) for l in lines)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm")
def test_own_keras_model_runs_on_the_emulated_board(project, tmp_path):
    run_dir, results, said = run_own(project, tmp_path, own_cnn(tmp_path, separable=True))
    assert "bn1 (BatchNormalization): folded into c1's weights and bias" in said
    assert "relu1 (ReLU): folded into c1 as its ReLU" in said
    assert "drop (Dropout): dropped" in said
    assert "d1 (Dense): given a zero bias" in said
    assert "sep (SeparableConv2D): split into sep_depthwise (DepthwiseConv2D) and sep_pointwise" in said
    assert "growth for new classes: hidden units of the trainable layers and output rows" in said
    config = json.loads((run_dir / "config.json").read_text())
    assert config["user_model"]["file"] == "my_cnn.keras" and config["tail_layers"] == 2
    assert config["user_model"]["growth"] == "hidden units of the trainable layers and output rows"
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    # the trainable hidden dense layer starts at the user's 24 units and grows on the width
    # policy's curve; the logits gain a row per new class; the frozen conv keeps its 8 channels
    assert [s["out"] for s in manifest["plan"]] == [[24, 2], [28, 4], [39, 6], [60, 8], [94, 10]]
    # the user's conv and the separable conv's two halves are the int8 prefix (the test's model
    # has the separable convolution)
    assert manifest["backbone_layers"][:3] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    assert "twin" in results, "the host twin did not run (no host C++ compiler?)"
    assert results["device"]["accuracy_matrix"] == results["twin"]["accuracy_matrix"]
    assert results["device"]["accuracy_matrix"][0][0] > 0.5


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm")
def test_own_one_dimensional_separable_model_trains_its_depthwise_layer_on_the_board(project,
                                                                                    tmp_path):
    from tinycil.learn.models import split_model, tail_layer_specs
    from tinycil.runfolder import RunFolder

    run_dir, results, said = run_own(project, tmp_path, own_cnn1d(tmp_path),
                                     dataset="basic-motions", tail_layers=3)
    assert "sep (SeparableConv1D): split into sep_depthwise (DepthwiseConv1D) and sep_pointwise" in said
    assert "bn (BatchNormalization): folded into sep_pointwise's weights and bias" in said
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    # the int8 prefix: the user's convolution and the separable convolution's two halves
    assert [op for op in manifest["backbone_layers"] if op != "RESHAPE"] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MAX_POOL_2D"]
    # the trainable part starts with the user's DepthwiseConv1D, trained as a one-row depthwise
    # convolution, and grows with its input
    _, tail = split_model(RunFolder(run_dir).load_model(), 3)
    specs = tail_layer_specs(tail)
    assert [s["op"] for s in specs][:2] == ["depthwise", "conv2d"]
    assert specs[0]["kernel"] == (1, 3) and specs[0]["in_hw"] == (1, 50)
    assert "twin" in results, "the host twin did not run (no host C++ compiler?)"
    assert results["device"]["accuracy_matrix"] == results["twin"]["accuracy_matrix"]
    assert results["device"]["accuracy_matrix"] == results["method"]["accuracy_matrix"]


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm")
def test_own_tflite_frozen_part_runs_on_the_emulated_board(project, tmp_path):
    tflite = frozen_tflite(tmp_path)
    run_dir, results, said = run_own(project, tmp_path, tflite)
    assert "tinycil adds a trainable dense head" in said
    config = json.loads((run_dir / "config.json").read_text())
    assert (run_dir / config["backbone_file"]).read_bytes() == tflite.read_bytes()  # as given
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["plan"][0]["out"] == [32, 2] and manifest["plan"][-1]["out"] == [125, 10]
    assert "twin" in results, "the host twin did not run (no host C++ compiler?)"
    assert results["device"]["accuracy_matrix"] == results["twin"]["accuracy_matrix"]
    assert results["device"]["accuracy_matrix"][0][0] > 0.5


def test_an_output_layer_reading_too_many_features_gets_no_head(tmp_path):
    """The discriminant head's scatter takes features^2 floats: an output layer reading more than
    HEAD_MAX_FEATURES features (here a flattened 8x8 map of a convolution that grows from 8
    channels) gets no head, said once, and the run trains and runs without it on the host twin."""
    import re

    import keras

    from tinycil.deploy.export import export_run
    from tinycil.deploy.twin import Twin, run_device_procedure
    from tinycil.learn.prepare import prepare_run
    from tinycil.learn.simulate import RunInputs, simulate_run
    from tinycil.protocol_spec import HEAD_MAX_FEATURES

    L = keras.layers
    path = keras_model(tmp_path, "wide_out", [L.Conv2D(8, 3, padding="same", activation="relu"),
                                              L.Flatten(), L.Dense(2)])
    said = []
    run = tmp_path / "run"
    config = prepare_run("digits", run, n_tasks=5, quick=True, progress=False, echo=said.append,
                         tail_layers=2, model_file=path)
    assert config["training"]["discriminant_weight"] == 0.0
    notes = [m for s in said if (m := re.search(r"no discriminant head: .* reads (\d+) features", str(s)))]
    assert len(notes) == 1 and int(notes[0].group(1)) >= 8 * 8 * 8 > HEAD_MAX_FEATURES, said
    export_run(run, "mps2_an500", firmware=False)
    inputs = RunInputs(run)
    twin = Twin(run)
    R = run_device_procedure(twin, inputs)
    assert twin.head_params()[0].size == 0
    assert R[-1] == simulate_run(run, inputs=inputs)["accuracy_matrix"][-1]


def test_a_sequential_saved_without_an_input_shape_is_built_for_the_data_set(tmp_path):
    import keras

    L = keras.layers
    path = tmp_path / "unbuilt.keras"
    keras.Sequential([L.Flatten(), L.Dense(16, activation="relu"), L.Dense(10)]).save(path)
    res = CliRunner().invoke(main, ["prepare", "--quick", "--no-simulate", "-d", "digits",
                                    "--model", str(path), "-o", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "unbuilt.keras: saved without an input shape, built for the data set's samples " \
           "(8, 8, 1)" in res.output
    assert (tmp_path / "run" / "config.json").is_file()
    # once built it is checked as any model is, before training
    bad = tmp_path / "unbuilt_bad.keras"
    keras.Sequential([L.Flatten(), L.Dense(16, activation="sigmoid", name="hidden"),
                      L.Dense(10)]).save(bad)
    out = refused(["prepare", "--no-simulate", "-d", "digits", "--model", bad, "-o", tmp_path / "r"])
    assert "layer 'hidden' (Dense): activation sigmoid" in out and "[2/7] training" not in out
    assert not (tmp_path / "r" / "config.json").exists()


@pytest.mark.parametrize("command", [["prepare", "--no-simulate"], ["run", "--board", "mps2_an500"]])
def test_a_family_with_your_own_model_is_refused(tmp_path, command):
    import keras

    path = keras_model(tmp_path, "mlp", [keras.layers.Flatten(), keras.layers.Dense(10)])
    out = refused(command + ["-d", "digits", "--model", path, "--family", "cnn2d",
                             "-o", tmp_path / "run"])
    assert "--family cnn2d chooses one of tinycil's models" in out and "leave --family out" in out
    assert not (tmp_path / "run" / "config.json").exists()


def _options_named(text: str) -> set[str]:
    import re

    return set(re.findall(r"--[a-z-]+", text))


def test_a_frozen_prefix_too_big_for_flash_says_flash_and_advises_a_smaller_model(tmp_path):
    import keras

    L = keras.layers
    path = keras_model(tmp_path, "big", [
        L.Conv2D(256, 3, padding="same", activation="relu"),
        L.Conv2D(256, 3, padding="same", activation="relu"), L.Flatten(),
        L.Dense(512, activation="relu"), L.Dense(10)])
    # --trainable auto: not even the logits alone fit, because of the flash (9 MB of int8
    # weights), not the RAM
    out = refused(["prepare", "--no-simulate", "-d", "digits", "--model", path, "-o", tmp_path / "a"])
    said = next(l for l in out.splitlines() if l.startswith("Error: "))
    assert said.startswith("Error: not even the logits alone fit mps2_an500: flash: needs "), said
    assert "RAM" not in said and "a smaller model of your own" in said
    assert _options_named(said) <= {"--buffer"}, said   # no --family, --resize nor --trainable
    out = refused(["prepare", "--no-simulate", "-d", "digits", "--model", path, "--trainable", "1",
                   "--board", "mps2_an500", "-o", tmp_path / "b"])
    said = next(l for l in out.splitlines() if l.startswith("Error: "))
    assert "does not fit mps2_an500. flash: needs" in said and "a smaller model of your own" in said
    assert _options_named(said) <= {"--buffer"}, said


def test_a_tflite_whose_head_does_not_fit_gets_advice_that_applies_to_it(tmp_path):
    import keras

    L = keras.layers
    # a latent of 8 x 8 x 128 values: the dense head on it does not fit in RAM nor flash
    part = keras.Sequential([keras.Input(DIGITS, batch_size=1),
                             L.Conv2D(128, 3, padding="same", activation="relu"), L.Flatten()])
    path = int8_tflite(part, np.random.default_rng(0).random((16, *DIGITS)), tmp_path / "wide.tflite")
    out = refused(["prepare", "--no-simulate", "-d", "digits", "--model", path,
                   "--board", "mps2_an500", "-o", tmp_path / "r"])
    said = next(l for l in out.splitlines() if l.startswith("Error: "))
    assert "RAM: needs" in said and "flash: needs" in said
    assert "pooling before its output layer" in said
    # neither --trainable (a .tflite is frozen whole) nor --family or --resize (the model is yours)
    assert _options_named(said) <= {"--buffer", "--batch-new", "--batch-replay"}, said


def test_linear_frozen_layers_give_the_twin_the_simulations_latents(tmp_path):
    """Frozen convolution, separable convolution (its depthwise half) and dense layers without an
    activation: the host twin's backbone (the firmware's int8 kernels) gives the latents of the
    host simulation (LiteRT) bit for bit, as for ReLU layers. Without a ReLU the negative
    half-way requantised values reach the output, where LiteRT's optimised and reference kernels
    round differently (tinycil.learn.quantize.make_interpreter)."""
    import keras

    from tinycil.deploy.export import export_run
    from tinycil.deploy.twin import Twin
    from tinycil.learn.prepare import prepare_run
    from tinycil.learn.simulate import RunInputs

    L = keras.layers
    path = keras_model(tmp_path, "linear", [
        L.Conv2D(8, 3, padding="same"), L.SeparableConv2D(8, 3, padding="same"), L.Flatten(),
        L.Dense(32), L.Dense(10)])
    run = tmp_path / "run"
    prepare_run("digits", run, n_tasks=5, quick=True, progress=False, echo=lambda *a: None,
                tail_layers=1, model_file=path, distill_iters=10)
    export_run(run, "mps2_an500", firmware=False)
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert [op for op in manifest["backbone_layers"] if op != "RESHAPE"] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    inputs = RunInputs(run)
    x = np.concatenate([t[0] for t in inputs.test] + [b[0] for b in inputs.buffers])
    want = inputs.backbone.run(x).reshape(len(x), -1)
    assert np.count_nonzero(want < inputs.backbone.output_zero_point) > want.size // 4  # linear
    got = Twin(run).backbone(x)
    assert got.shape == want.shape
    assert np.array_equal(got, want), \
        f"{np.count_nonzero(got != want)} of {want.size} latent values differ"
