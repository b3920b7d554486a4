"""Checking a user's own model against what the device runtime runs, layer by layer.

Two kinds of file:
- a Keras model (.keras or .h5): the whole model, trained by the user; tinycil may train its
  last layers on the device (float32) and runs the others as int8;
- a full-int8 .tflite model: a frozen part only (the device never trains it), with int8 input
  and output and only the operators of the int8 runtime.

A Keras model is first put in the form the device runs (tinycil.learn.simplify: dropout dropped,
batch normalisation and ReLU layers folded into the layer before them where they can be); every
layer (or operator) the runtime cannot run is reported with its name, its type and the
supported list, so the user knows what to change before anything is trained or exported. The
lists here are the ones tinycil.learn.models (the trainable layers) and tinycil.deploy.export
(the int8 operators) implement; keep them in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinycil.deploy.export import SUPPORTED_OPS
from tinycil.learn.models import DEPTHWISE_TYPES, WEIGHT_LAYER_TYPES
from tinycil.learn.simplify import activation_name, plain_relu, simplify_keras

CONVOLUTIONS = tuple(k for k in WEIGHT_LAYER_TYPES if k != "Dense")

# Keras layers the device runs, with what each needs.
KERAS_LAYERS = {
    "InputLayer": "the model's input",
    "Conv2D": "int8 or trainable; activation relu or none; padding valid or same; no dilation "
              "or groups",
    "Conv1D": "int8 or trainable (as a 1-row Conv2D); activation relu or none; padding valid or "
              "same; no dilation or groups",
    "DepthwiseConv2D": "int8 or trainable (depth multiplier 1); activation relu or none; padding "
                       "valid or same; no dilation",
    "DepthwiseConv1D": "int8 or trainable (as a 1-row DepthwiseConv2D; depth multiplier 1); "
                       "activation relu or none; padding valid or same; no dilation",
    "Dense": "int8 or trainable, on a vector; activation relu or none (the last one: none or "
             "softmax)",
    "MaxPooling2D": "", "MaxPooling1D": "", "AveragePooling2D": "", "AveragePooling1D": "",
    "GlobalAveragePooling2D": "without keepdims", "GlobalAveragePooling1D": "without keepdims",
    "Flatten": "",
}
# Layers tinycil.learn.simplify folds into the layer before them, and where it can.
_WHERE = "right after a convolution or dense layer without an activation"
FOLDABLE = {
    "BatchNormalization": f"batch normalisation is folded into the weights only {_WHERE}, "
                          "over the channel axis: conv, batch norm, then ReLU",
    "ReLU": f"a plain ReLU layer is folded {_WHERE}; give that layer activation='relu'",
    "Activation": f"a relu Activation is folded {_WHERE}, a softmax one after the output layer",
}
HIDDEN_ACTIVATIONS = ("relu", "linear")
FUSED_ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
# What TFLite's converter emits around Flatten/Reshape when the batch size is not fixed.
_DYNAMIC_BATCH_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TFLITE_SUFFIXES = (".tflite",)
# TensorFlow's name scope pattern: training (tf.function) opens a scope per layer, named after
# the layer, and fails on a name with a space or a non-ASCII letter that Keras itself accepted.
# The layer is refused, not renamed: its name is how the run's notes, the cut and the export's
# layer list speak of it, and a renamed copy could collide with another layer's name.
_VALID_LAYER_NAME = re.compile(r"^[A-Za-z0-9_.\\/>-]*$")


class ModelCheckError(ValueError):
    """A model the device cannot run; the message names every offending layer."""


@dataclass
class Problem:
    layer: str        # the layer's (or operator's) name
    kind: str         # its type
    why: str          # what is wrong

    def line(self) -> str:
        return f"layer '{self.layer}' ({self.kind}): {self.why}"


@dataclass
class ModelReport:
    path: Path
    format: str                                  # "keras" or "tflite"
    input_shape: tuple[int, ...]
    outputs: int                                 # classes (keras) or output values (tflite)
    layers: list[tuple[str, str]] = field(default_factory=list)   # (name, type), in order
    problems: list[Problem] = field(default_factory=list)
    # What was dropped or folded before the check (tinycil.learn.simplify), one line each.
    notes: list[str] = field(default_factory=list)

    def raise_if_unsupported(self) -> "ModelReport":
        if not self.problems:
            return self
        supported = (", ".join(KERAS_LAYERS) if self.format == "keras"
                     else ", ".join(SUPPORTED_OPS))
        lines = [p.line() for p in self.problems]
        raise ModelCheckError(
            f"{self.path.name} cannot run on the device: {'; '.join(lines)}. "
            f"Supported {'layers' if self.format == 'keras' else 'int8 operators'}: {supported}.")


def _input_rank(layer) -> int:
    """Dimensions of a layer's input without the batch (0 when Keras cannot say)."""
    try:
        return len(layer.input.shape) - 1
    except (AttributeError, ValueError):
        return 0


def check_keras_model(model, path: Path | str = "model") -> ModelReport:
    """Every layer of a Keras model against the runtime; the report lists all problems at once."""
    path = Path(path)
    layers = list(model.layers)
    # A plain chain: branches need merge layers (Add, Concatenate), refused below as unsupported;
    # several inputs or outputs are refused here, alone (Keras gives such a model a tuple of
    # shapes, and which of its layers is "the last" means nothing).
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        report = ModelReport(path=path, format="keras", input_shape=(),
                             outputs=0, layers=[(l.name, type(l).__name__) for l in layers])
        report.problems.append(Problem(model.name, "Model", f"{len(model.inputs)} inputs and "
                                       f"{len(model.outputs)} outputs: the device runs a plain "
                                       "chain with one of each"))
        return report
    report = ModelReport(path=path, format="keras",
                         input_shape=tuple(int(d) for d in model.input_shape[1:]),
                         outputs=int(model.output_shape[-1]))
    weight_layers = [l for l in layers if type(l).__name__ in WEIGHT_LAYER_TYPES]
    last = layers[-1] if layers else None
    for layer in layers:
        kind = type(layer).__name__
        report.layers.append((layer.name, kind))
        if not _VALID_LAYER_NAME.match(layer.name):
            report.problems.append(Problem(layer.name, kind, "TensorFlow cannot train a layer "
                                           "with this name (spaces and non-ASCII letters are "
                                           "refused): rename it with letters, digits, _ . - only "
                                           "(name=...) and save the model again"))
        if kind not in KERAS_LAYERS:
            why = "not supported by the device runtime"
            if kind == "ReLU" and not plain_relu(layer):
                # The fold makes max(x, 0) only; a cap (ReLU6), a leak or a threshold would change
                # the model's outputs.
                cfg = layer.get_config()
                why = (f"ReLU with max_value={cfg.get('max_value')}, negative_slope="
                       f"{cfg.get('negative_slope') or 0}, threshold={cfg.get('threshold') or 0}: "
                       "the device runs max(x, 0) only; use ReLU() without arguments")
            elif kind in FOLDABLE:
                why += f" here ({FOLDABLE[kind]})"
            report.problems.append(Problem(layer.name, kind, why))
            continue
        act = activation_name(layer)
        if layer is last:
            if kind != "Dense":
                report.problems.append(Problem(layer.name, kind, "the last layer must be the "
                                               "Dense layer of the class logits"))
            elif act not in ("linear", "softmax"):
                report.problems.append(Problem(layer.name, kind, f"activation {act}: the logits "
                                               "take none (or softmax, dropped on the device)"))
        elif act not in HIDDEN_ACTIVATIONS:
            report.problems.append(Problem(layer.name, kind, f"activation {act}: the device runs "
                                           "relu or none"))
        if kind in CONVOLUTIONS and any(int(d) != 1 for d in layer.dilation_rate):
            report.problems.append(Problem(layer.name, kind, "dilated convolution"))
        if kind in ("Conv2D", "Conv1D") and int(getattr(layer, "groups", 1)) != 1:
            report.problems.append(Problem(layer.name, kind, f"grouped convolution (groups="
                                           f"{layer.groups}): the device runs groups=1"))
        if kind in CONVOLUTIONS and layer.padding not in ("valid", "same"):
            report.problems.append(Problem(layer.name, kind, f"padding '{layer.padding}': the "
                                           "device pads 'valid' or 'same'"))
        if kind == "Dense" and _input_rank(layer) > 1:
            report.problems.append(Problem(layer.name, kind, "a Dense layer on a map (Keras applies "
                                           "it at every position); the device's dense layers take "
                                           "a vector: put Flatten or global average pooling before "
                                           "it"))
        if kind in DEPTHWISE_TYPES and int(layer.depth_multiplier) != 1:
            report.problems.append(Problem(layer.name, kind,
                                           f"depth multiplier {layer.depth_multiplier} (1 only)"))
        if kind.startswith("GlobalAveragePooling") and getattr(layer, "keepdims", False):
            report.problems.append(Problem(layer.name, kind, "keepdims=True (use the default)"))
    if not weight_layers:
        report.problems.append(Problem(model.name, "Model", "has no Dense or convolution layer"))
    return report


def check_tflite_model(tflite_bytes: bytes, path: Path | str = "model.tflite") -> ModelReport:
    """A frozen part given as .tflite: full int8 (input, output and every operator), and only the
    operators of the int8 runtime."""
    from tinycil.learn.quantize import QuantizeError, make_interpreter, read_layers

    path = Path(path)
    try:
        interp = make_interpreter(tflite_bytes)
        tensors = {int(d["index"]): d for d in interp.get_tensor_details()}
        ops = interp._get_ops_details()
    except (QuantizeError, ValueError, RuntimeError) as exc:
        raise ModelCheckError(f"{path.name} is not a TFLite model tinycil can read: {exc}") from exc
    if not ops:
        raise ModelCheckError(f"{path.name} holds no operators")
    inp, out = interp.get_input_details(), interp.get_output_details()
    report = ModelReport(path=path, format="tflite",
                         input_shape=tuple(int(d) for d in inp[0]["shape"][1:]),
                         outputs=int(out[0]["shape"][-1]))
    if len(inp) != 1 or len(out) != 1:
        report.problems.append(Problem(path.stem, "Model", f"{len(inp)} inputs and {len(out)} "
                                       "outputs: the device runs one of each"))
    for op in ops:
        outs = [int(i) for i in op["outputs"]]
        name = tensors[outs[0]]["name"] if outs else f"op{op['index']}"
        kind = op["op_name"]
        report.layers.append((name, kind))
        if kind not in SUPPORTED_OPS:
            why = "not an operator of the int8 runtime"
            if kind in _DYNAMIC_BATCH_OPS:
                why += (" (the converter adds it for a batch dimension of unknown size: convert "
                        "a model whose input has batch_shape=(1, ...))")
            report.problems.append(Problem(name, kind, why))
            continue
        for role in ("inputs", "outputs"):
            first = int(op[role][0])
            dtype = np.dtype(tensors[first]["dtype"]).name
            if dtype != "int8":
                report.problems.append(Problem(name, kind, f"its {role[:-1]} is {dtype}, not int8: "
                                               "convert with full-integer quantisation "
                                               "(TFLITE_BUILTINS_INT8, int8 input and output)"))
                break
    if report.problems:
        return report
    for L in read_layers(tflite_bytes):
        act = L.get("options", {}).get("activation", "NONE")
        if act not in FUSED_ACTIVATIONS:
            report.problems.append(Problem(L["outputs"][0]["name"], L["op"],
                                           f"fused activation {act}"))
    return report


def check_model_file(path, later_if_unbuilt: bool = False) -> ModelReport | None:
    """Loads and checks a .keras/.h5 or .tflite file; raises ModelCheckError with every problem.
    `later_if_unbuilt` (prepare, run): a Sequential saved without an input shape is not refused
    but left (None) for prepare, which builds it for the data set's samples and checks it then
    (`check_user_model`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelCheckError(f"{path} does not exist: give a .keras, .h5 or full-int8 .tflite file")
    suffix = path.suffix.lower()
    if suffix in TFLITE_SUFFIXES:
        return check_tflite_model(path.read_bytes(), path).raise_if_unsupported()
    if suffix not in KERAS_SUFFIXES:
        raise ModelCheckError(f"{path.name}: tinycil reads Keras models ({', '.join(KERAS_SUFFIXES)})"
                              f" and full-int8 TFLite models (.tflite)")
    import keras

    from tinycil.learn.usermodel import keras_file_problem, unbuilt, unbuilt_advice

    problem = keras_file_problem(path)
    if problem:
        raise ModelCheckError(problem)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds for a damaged or foreign file
        raise ModelCheckError(f"{path.name} could not be loaded as a Keras model: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    if unbuilt(model):
        if later_if_unbuilt:
            return None
        raise ModelCheckError(unbuilt_advice(path.name))
    if len(model.inputs) == 1:
        shape = tuple(model.inputs[0].shape[1:])
        if any(d is None for d in shape):
            raise ModelCheckError(
                f"{path.name} takes inputs of shape {shape} (None: any size): the device needs a "
                f"fixed one: give the model keras.Input(shape=...) with the data set's sample "
                f"shape, e.g. (8, 8, 1) for digits, and save it again")
    model, notes = simplify_keras(model)
    report = check_keras_model(model, path)
    report.notes = notes
    return report.raise_if_unsupported()


def check_user_model(model, path) -> None:
    """prepare_run's `check_user_model`: the check of a Keras model prepare built for the data
    set's samples (simplified already), raising ModelCheckError with every problem."""
    check_keras_model(model, path).raise_if_unsupported()
