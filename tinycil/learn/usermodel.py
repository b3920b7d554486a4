"""Your own model in a device run (`tinycil prepare --model FILE`).

Two kinds of file:
- a Keras model (.keras, .h5): tinycil keeps its layers and weights (a start for training), gives
  its output layer one row per class of the known tasks (a softmax is dropped: the device works on
  logits), trains it on the known tasks, cuts it (--trainable N; auto: the memory plan's cut for
  the board, as for tinycil's families - the most trainable layers whose arena fits its RAM - or,
  with no board to plan for, its dense tail) and quantises the frozen prefix with the data set's
  samples;
- a full-int8 .tflite: it is the frozen prefix as it is (its own quantisation); tinycil builds a
  small trainable dense head on its output and trains that head on the known tasks.

The layers were checked against the runtime before (tinycil.deploy.modelcheck, from the command
line: learn/ may not import deploy/).

Growth for new classes: the output layer gains a row per class; the hidden layers of the
trainable part (when it holds any besides the logits) gain units as tinycil's own families do,
following the width policy's curve (tinycil.learn.sizing.WidthPolicy) scaled so that the user's
widths are those of the known tasks. The frozen prefix keeps its widths. With only the output
layer trainable, growth is output rows only, and the run says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinycil.learn.models import DEPTHWISE_TYPES, WEIGHT_LAYER_TYPES

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def keras_file_problem(path) -> str | None:
    """What makes `path` no Keras model file at all, before Keras reads it (Keras then says
    "file not found" of a file that exists), or None. A .keras model is a zip archive, a .h5
    one an HDF5 file."""
    import zipfile

    path = Path(path)
    if path.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(path):
            return (f"{path.name} is not a .keras model (a .keras file is a zip archive, as "
                    f"`model.save('{path.name}')` writes it)")
    elif path.read_bytes()[:len(HDF5_SIGNATURE)] != HDF5_SIGNATURE:
        return (f"{path.name} is not an HDF5 Keras model (as `model.save('{path.stem}.h5')` "
                f"writes it)")
    return None


def unbuilt(model) -> bool:
    """A Sequential saved before Keras knew its input shape (no keras.Input, never called on
    data): it has no inputs and no weights yet."""
    try:
        model.inputs
    except (AttributeError, ValueError):
        return True
    return False


def unbuilt_advice(name: str) -> str:
    return (f"{name} was saved without an input shape (a Sequential with no keras.Input, never "
            f"called on data): add keras.Input(shape=...) with the data set's sample shape as its "
            f"first layer and save it again, or give it to `tinycil prepare --model`, which "
            f"builds it for the data set's samples")


# The head tinycil builds on a .tflite frozen part: one hidden dense layer of this many units.
TFLITE_HEAD_UNITS = 32


class UserModelError(ValueError):
    """A user's model that does not suit the run (say what to change)."""


class UserModel:
    """A user's model file, checked against the data set and the known tasks."""

    def __init__(self, path, input_shape, known_classes: int, tail_layers, echo=None,
                 check=None):
        self.path = Path(path)
        self.echo = echo or (lambda msg: None)
        # check(model, path): the layer check (tinycil.deploy.modelcheck.check_user_model, passed
        # in: learn/ may not import deploy/), raising when the device cannot run the model.
        self.check = check
        suffix = self.path.suffix.lower()
        want = tuple(int(d) for d in input_shape)
        if suffix == ".tflite":
            self.kind = "tflite"
            self._load_tflite(want)
            if tail_layers not in ("auto", 2):
                self.echo(f"--trainable {tail_layers} ignored: a .tflite is frozen as a whole; the "
                          f"device trains the dense head tinycil builds on it")
            self.tail_layers = 2
            self.echo(f"{self.path.name} is the frozen int8 part (output {self.latent_shape}); "
                      f"tinycil adds a trainable dense head ({TFLITE_HEAD_UNITS} hidden units, "
                      f"then the logits)")
        elif suffix in KERAS_SUFFIXES:
            self.kind = "keras"
            self._load_keras(want, known_classes)
            self.tail_layers = self._cut(tail_layers)
        else:
            raise UserModelError(f"--model {self.path.name}: give a Keras model (.keras, .h5) or a "
                                 f"full-int8 .tflite")

    # -- loading and checks -------------------------------------------------------------------

    def _load_keras(self, want, known_classes):
        import keras

        from tinycil.learn.models import weight_layers

        problem = keras_file_problem(self.path)
        if problem:
            raise UserModelError(problem)
        try:
            self.source = keras.models.load_model(self.path, compile=False)
        except Exception as exc:  # Keras raises many kinds for a damaged or foreign file
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserModelError(f"{self.path.name} could not be loaded as a Keras model: {first}") from None
        if unbuilt(self.source):
            # Built as Keras builds a Sequential on its first data: the data set's samples are
            # the only inputs it will ever see, and an unbuilt model has no trained weights to
            # lose (training on the known tasks starts from its initial ones).
            self.source.build((None, *want))
            self.echo(f"{self.path.name}: saved without an input shape, built for the data set's "
                      f"samples {want} (it had no weights yet: training starts from Keras' "
                      f"initial ones)")
        from tinycil.learn.simplify import simplify_keras

        self.source, notes = simplify_keras(self.source)
        for note in notes:
            self.echo(f"{self.path.name}: {note}")
        if self.check is not None:
            self.check(self.source, self.path)
        got = tuple(int(d) for d in self.source.input_shape[1:])
        if got != want:
            raise UserModelError(f"{self.path.name} takes inputs of shape {got}, the data set gives "
                                 f"samples of shape {want}: use a model built for that shape (or "
                                 f"--resize for images)")
        outputs = int(self.source.output_shape[-1])
        if outputs < known_classes:
            raise UserModelError(f"{self.path.name} has {outputs} outputs, the known tasks hold "
                                 f"{known_classes} classes: give the model at least that many "
                                 f"outputs, or fewer known classes (--known, --tasks)")
        self.n_weight = len(weight_layers(self.source))

    def _load_tflite(self, want):
        from tinycil.learn.quantize import QuantizedModel, QuantizeError, read_layers

        data = self.path.read_bytes()
        try:
            layers = read_layers(data)
        except (QuantizeError, ValueError, RuntimeError) as exc:
            raise UserModelError(f"{self.path.name} is not a TFLite model tinycil can read: {exc}") from None
        first, last = layers[0]["input"], layers[-1]["output"]
        got = tuple(int(d) for d in first["shape"][1:])
        if got != want:
            raise UserModelError(f"{self.path.name} takes inputs of shape {got}, the data set gives "
                                 f"samples of shape {want}: convert a model built for that shape")
        self.latent_shape = tuple(int(d) for d in last["shape"][1:])
        self.quantized = QuantizedModel(data, float(first["scale"]), int(first["zero_point"]),
                                        float(last["scale"]), int(last["zero_point"]), got,
                                        self.latent_shape)
        self.n_weight = 2

    def _cut(self, tail_layers):
        """--trainable N as given; "auto" stays "auto": prepare asks the board's memory plan
        (tinycil.deploy.cut.choose_trainable) and then calls set_cut, or dense_tail without one."""
        from tinycil.learn.models import weight_layers

        kinds = [type(l).__name__ for l in weight_layers(self.source)]
        if tail_layers == "auto":
            return "auto"
        if tail_layers > len(kinds):
            raise UserModelError(f"--trainable {tail_layers}: {self.path.name} has {len(kinds)} "
                                 f"weight layers; use at most {len(kinds)}")
        return int(tail_layers)

    def dense_tail(self) -> int:
        """The cut without a memory plan: the model's trailing Dense layers train."""
        from tinycil.learn.models import weight_layers

        kinds = [type(l).__name__ for l in weight_layers(self.source)]
        n = 0
        while n < len(kinds) and kinds[-1 - n] == "Dense":
            n += 1
        self.echo(f"trainable layers: {n} of {len(kinds)} (auto without a board to plan for: "
                  f"your model's dense tail; --trainable N trains the last N)")
        return n

    def set_cut(self, tail_layers: int, reason: str):
        """The cut the memory plan chose, said with its reason."""
        self.tail_layers = int(tail_layers)
        self.echo(reason)

    # -- what prepare_run asks -----------------------------------------------------------------

    def widths(self) -> list[int]:
        """Hidden widths as tinycil's families count them (convolutions' and dense layers' output
        channels, depthwise layers and logits excluded); they stay fixed for every task."""
        if self.kind == "tflite":
            return [TFLITE_HEAD_UNITS]
        from tinycil.learn.models import model_widths

        return model_widths(self.source)

    def plan(self, tasks, known: int, tail_layers: int | None = None, quiet: bool = False
             ) -> list[dict]:
        """The growth plan (as prepare.plan_for_device writes it) when the last `tail_layers`
        weight layers train (default: the cut chosen): the frozen prefix keeps its widths, the
        trainable hidden layers grow, the output layer gains a row per new class. `quiet`: a
        candidate cut's plan, nothing said."""
        import math

        from tinycil.learn.sizing import WidthPolicy

        widths = self.widths()
        n_backbone = self._backbone_width_count(tail_layers)
        policy = WidthPolicy(tuple(widths))
        total = sum(len(t) for t in tasks)
        start = policy.fraction(sum(len(t) for t in tasks[:known]), total)
        growth = ("hidden units of the trainable layers and output rows"
                  if widths[n_backbone:] else "output rows only")
        if not quiet:
            self.growth = growth
            self.echo(f"growth for new classes: {growth}" + (
                "" if widths[n_backbone:] else " (no hidden layer is trainable: train more with "
                                               "--trainable N to grow hidden units too)"))
        plan, seen = [], []
        for i, task in enumerate(tasks):
            seen += [int(c) for c in task]
            if i >= known:
                # the policy's curve, scaled so that the known tasks' widths are the user's
                grow = policy.fraction(len(seen), total) / start
                widths = widths[:n_backbone] + [max(w, math.ceil(w * grow - 1e-9))
                                                for w in self.widths()[n_backbone:]]
            plan.append({
                "task": i, "classes": [int(c) for c in task], "classes_seen": len(seen),
                "widths": list(widths), "tail_widths": list(widths[n_backbone:]),
                "seen_classes": list(seen),
                "outputs": len(seen) if i >= known else sum(len(t) for t in tasks[:known]),
                "learned_on": "host" if i < known else "device"})
        return plan

    def _backbone_width_count(self, tail_layers: int | None = None) -> int:
        if self.kind == "tflite":
            return 0
        from tinycil.learn.models import weight_layers

        trainable = self.tail_layers if tail_layers is None else tail_layers
        frozen = weight_layers(self.source)[:self.n_weight - trainable]
        return sum(1 for l in frozen if type(l).__name__ not in DEPTHWISE_TYPES)

    def model(self, outputs: int, seed: int = 0):
        """The Keras model prepare trains: the user's layers and weights with `outputs` logits
        (the first rows of the user's output layer; new rows zero), or for a .tflite the dense
        head on its output."""
        if self.kind == "tflite":
            return _head(self.latent_shape, outputs, seed)
        return with_outputs(self.source, outputs, name="user")

    def features(self, x: np.ndarray) -> np.ndarray:
        """What the trained Keras model takes: the samples themselves, or for a .tflite the frozen
        part's outputs (dequantised, as the device's latent)."""
        if self.kind == "keras":
            return x
        return self.quantized.run_float(np.asarray(x, np.float32)).astype(np.float32)

    def quantize(self, model, tail_layers: int, representative_x):
        """The frozen int8 prefix: the user's Keras prefix quantised with the data set's samples,
        or the .tflite as given."""
        if self.kind == "tflite":
            return self.quantized
        from tinycil.learn.models import split_model
        from tinycil.learn.quantize import quantize_backbone

        backbone, _ = split_model(model, tail_layers)
        return quantize_backbone(backbone, representative_x)

    def grown(self, model, widths, outputs: int):
        """The model at a later task's size (for costing; fresh weights)."""
        from tinycil.learn.models import layer_channels, weight_kinds

        return rebuilt(model, layer_channels(weight_kinds(model), widths, outputs), model.name)

    def describe(self) -> dict:
        return {"file": self.path.name, "format": self.kind, "growth": self.growth,
                "head_units": TFLITE_HEAD_UNITS if self.kind == "tflite" else None}


def with_outputs(model, outputs: int, name: str):
    """A copy of a plain-chain Keras model whose last (Dense) layer has `outputs` units and no
    activation: the first rows keep their weights, new rows are zero (they start neutral, as the
    device's grown rows do)."""
    import keras

    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    inp = keras.Input(shape=tuple(int(d) for d in model.input_shape[1:]), name="input")
    copies = []
    for i, layer in enumerate(layers):
        config = layer.get_config()
        if i == len(layers) - 1:
            config.update(units=int(outputs), activation="linear")
        copies.append(type(layer).from_config(config))
    new = keras.Sequential([inp] + copies, name=name)
    for i, (old, copy) in enumerate(zip(layers, copies)):
        weights = old.get_weights()
        if i == len(layers) - 1 and weights:
            kernel, bias = weights
            k = np.zeros((kernel.shape[0], outputs), np.float32)
            b = np.zeros(outputs, np.float32)
            n = min(outputs, kernel.shape[1])
            k[:, :n], b[:n] = kernel[:, :n], bias[:n]
            weights = [k, b]
        if weights:
            copy.set_weights(weights)
    return new


def rebuilt(model, channels, name: str):
    """A fresh plain-chain copy of `model` whose weight layers have these output channels
    (depthwise layers keep their input's)."""
    import keras

    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    it = iter(int(c) for c in channels)
    copies = []
    for layer in layers:
        config = layer.get_config()
        kind = type(layer).__name__
        if kind in WEIGHT_LAYER_TYPES:
            ch = next(it)
            if kind == "Dense":
                config["units"] = ch
            elif kind not in DEPTHWISE_TYPES:
                config["filters"] = ch
        copies.append(type(layer).from_config(config))
    inp = keras.Input(shape=tuple(int(d) for d in model.input_shape[1:]), name="input")
    return keras.Sequential([inp] + copies, name=name)


def _head(latent_shape, outputs: int, seed: int):
    """The trainable dense head on a .tflite's output: (flatten,) dense relu, logits."""
    import keras

    L = keras.layers
    layers = [keras.Input(shape=tuple(latent_shape), name="latent")]
    if len(latent_shape) > 1:
        layers.append(L.Flatten(name="flatten"))
    layers += [
        L.Dense(TFLITE_HEAD_UNITS, activation="relu", name="head1",
                kernel_initializer=keras.initializers.HeNormal(seed=seed * 1000)),
        L.Dense(outputs, name="logits",
                kernel_initializer=keras.initializers.HeNormal(seed=seed * 1000 + 1)),
    ]
    return keras.Sequential(layers, name="user_head")
