"""A user's Keras model in the form the device runs, computing the same function at inference.

Models trained in Keras often carry layers that do nothing at inference, or that a converter
folds away: TFLite's converter does the same before a model reaches TensorFlow Lite Micro. Here:

- Dropout and its relatives (SpatialDropout, GaussianDropout, GaussianNoise, AlphaDropout,
  ActivityRegularization) are the identity at inference: dropped. The device, and the host's
  training of the known tasks, then train without them.
- A ReLU written as a layer of its own (``ReLU()`` with its defaults, ``Activation("relu")``)
  right after a convolution or dense layer without an activation becomes that layer's
  activation; so does one after max pooling that follows such a layer (the two commute).
  ``Activation("linear")`` is dropped; ``Activation("softmax")`` or a ``Softmax()`` layer (over
  the last axis) after the output layer becomes its softmax (the device works on logits and
  drops it).
- ``Reshape((n,))`` of a whole map is a Flatten (the same values in the same order): it becomes
  one. Other reshapes stay (and are refused).
- A convolution or dense layer without a bias (use_bias=False) gets a zero one: the device's
  layers always have one, and training then moves it as it moves every other bias.
- BatchNormalization right after a convolution or dense layer without an activation (the usual
  conv - batch norm - ReLU) is folded into that layer's weights and bias with the moving
  statistics: w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta.
- SeparableConv2D is what its name says: a depthwise convolution (its kernel size, strides,
  padding and depth multiplier, a zero bias) followed by a 1x1 convolution (its filters, bias and
  activation). It becomes those two layers, which the device runs (the DS-CNN's own pair); a batch
  normalisation or ReLU after it then folds into the 1x1 convolution. SeparableConv1D becomes a
  DepthwiseConv1D and a kernel-1 Conv1D the same way (the device runs both as one-row 2-D layers).

Anything else stays as it is, and tinycil.deploy.modelcheck names what the device cannot run
(for example batch normalisation after a ReLU, which no weight layer can absorb).
"""

from __future__ import annotations

import numpy as np

from tinycil.learn.models import DEPTHWISE_TYPES
from tinycil.learn.models import WEIGHT_LAYER_TYPES as WEIGHT_KINDS

# A separable convolution's two halves, by its own type.
SEPARABLE_HALVES = {"SeparableConv2D": ("DepthwiseConv2D", "Conv2D"),
                    "SeparableConv1D": ("DepthwiseConv1D", "Conv1D")}

INFERENCE_IDENTITY = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                      "GaussianDropout", "GaussianNoise", "AlphaDropout", "ActivityRegularization")


def activation_name(layer) -> str:
    """A layer's activation by name ("linear" when it has none)."""
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "linear") if act is not None else "linear"


def plain_relu(layer) -> bool:
    """A ReLU layer with its defaults: max(x, 0), nothing capped, no leak, no threshold."""
    cfg = layer.get_config()
    return (cfg.get("max_value") is None and not cfg.get("negative_slope")
            and not cfg.get("threshold"))


def _fold_batchnorm(kind: str, weights: list, config: dict, bn) -> tuple[list, dict]:
    """The weight layer's [kernel, bias] with the batch normalisation that follows it folded in."""
    cfg = bn.get_config()
    values = dict(zip([w.path.split("/")[-1] for w in bn.weights], bn.get_weights()))
    mean, var = values["moving_mean"], values["moving_variance"]
    gamma = values.get("gamma", np.ones_like(mean))
    beta = values.get("beta", np.zeros_like(mean))
    scale = gamma / np.sqrt(var + float(cfg["epsilon"]))
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else np.zeros_like(mean)
    if kind in DEPTHWISE_TYPES:         # kernel (kh, kw, channels, 1) or (k, channels, 1)
        kernel = kernel * scale.reshape(-1, 1)
    else:                               # (..., out): the output channel is the last axis
        kernel = kernel * scale
    config = dict(config, use_bias=True)
    return [kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)], config


def _bare(entry) -> bool:
    """A kept [kind, config, weights, name] that is a weight layer without an activation."""
    return (entry is not None and entry[0] in WEIGHT_KINDS
            and entry[1].get("activation", "linear") == "linear")


def _foldable_batchnorm(bn, prev_kind: str) -> bool:
    axis = bn.get_config().get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    rank = len(bn.input.shape) if getattr(bn, "input", None) is not None else None
    last = axis == -1 or (rank is not None and axis == rank - 1)
    return last and prev_kind in WEIGHT_KINDS


def _last_axis_softmax(layer) -> bool:
    """A Softmax layer over the last axis (its default): the logits' softmax."""
    axis = layer.get_config().get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    return axis == -1


def _flat_reshape(layer) -> bool:
    """A Reshape to one dimension holding every value of its input: a Flatten."""
    target = tuple(layer.target_shape)
    try:
        size = int(np.prod([int(d) for d in layer.input.shape[1:]]))
    except (AttributeError, TypeError, ValueError):   # no input shape, or a None in it
        return False
    return len(target) == 1 and target[0] in (-1, size)


def _split_separable(layer) -> list[list]:
    """A SeparableConv2D or SeparableConv1D as [kind, config, weights, name] of its depthwise and
    pointwise (kernel 1) halves."""
    cfg = layer.get_config()
    values = dict(zip([w.path.split("/")[-1] for w in layer.weights], layer.get_weights()))
    depthwise, pointwise = values["depthwise_kernel"], values["pointwise_kernel"]
    bias = values.get("bias", np.zeros(pointwise.shape[-1], np.float32))
    dw = {"name": f"{layer.name}_depthwise", "kernel_size": cfg["kernel_size"],
          "strides": cfg["strides"], "padding": cfg["padding"],
          "depth_multiplier": cfg["depth_multiplier"], "dilation_rate": cfg["dilation_rate"],
          "data_format": cfg.get("data_format"), "activation": "linear", "use_bias": True}
    pw = {"name": f"{layer.name}_pointwise", "filters": cfg["filters"], "kernel_size": 1,
          "padding": "valid", "data_format": cfg.get("data_format"),
          "activation": cfg.get("activation", "linear"), "use_bias": True}
    depthwise_kind, pointwise_kind = SEPARABLE_HALVES[type(layer).__name__]
    return [[depthwise_kind, dw, [depthwise, np.zeros(depthwise.shape[-2] * depthwise.shape[-1],
                                                       np.float32)], dw["name"]],
            [pointwise_kind, pw, [pointwise, bias.astype(np.float32)], pw["name"]]]


def simplify_keras(model):
    """(model, notes): `model` unchanged when nothing applies, else a new plain Sequential model
    computing the same function at inference; `notes` say what was dropped or folded, one line
    each. A model with several inputs or outputs is returned as it is (the check refuses it)."""
    import keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return model, []
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    # Each kept layer as [kind, config, weights, name]; folding edits the last kept one.
    kept: list[list] = []
    notes: list[str] = []
    for layer in layers:
        kind = type(layer).__name__
        prev = kept[-1] if kept else None
        prev_bare = _bare(prev)
        if kind in INFERENCE_IDENTITY:
            notes.append(f"{layer.name} ({kind}): dropped, the identity at inference "
                         f"(the device trains without it)")
            continue
        if kind == "Activation" and activation_name(layer) == "linear":
            notes.append(f"{layer.name} (Activation linear): dropped, the identity")
            continue
        relu = (kind == "ReLU" and plain_relu(layer)) or (kind == "Activation"
                                                          and activation_name(layer) == "relu")
        if relu and prev_bare:
            prev[1] = dict(prev[1], activation="relu")
            notes.append(f"{layer.name} ({kind}): folded into {prev[3]} as its ReLU")
            continue
        # max(relu(a), relu(b)) = relu(max(a, b)): a ReLU after max pooling is the layer's before it.
        before = kept[-2] if len(kept) > 1 else None
        if relu and prev is not None and prev[0].startswith("MaxPooling") and _bare(before):
            before[1] = dict(before[1], activation="relu")
            notes.append(f"{layer.name} ({kind}): folded into {before[3]} as its ReLU (max pooling "
                         f"and ReLU commute)")
            continue
        softmax = ((kind == "Activation" and activation_name(layer) == "softmax")
                   or (kind == "Softmax" and _last_axis_softmax(layer)))
        if softmax and layer is layers[-1] and prev_bare and prev[0] == "Dense":
            prev[1] = dict(prev[1], activation="softmax")
            what = "Activation softmax" if kind == "Activation" else kind
            notes.append(f"{layer.name} ({what}): the output layer's softmax "
                         f"(dropped on the device, which works on logits)")
            continue
        if kind == "Reshape" and _flat_reshape(layer):
            # Reshape((n,)) of a whole map is exactly Flatten (both row-major, channels last),
            # which the device runs; any other Reshape stays and is refused by the check.
            kept.append(["Flatten", {"name": layer.name, "data_format": "channels_last"}, [],
                         layer.name])
            notes.append(f"{layer.name} (Reshape to {tuple(layer.target_shape)}): a Flatten, "
                         f"the same values in the same order")
            continue
        if kind == "BatchNormalization" and prev_bare and _foldable_batchnorm(layer, prev[0]):
            prev[2], prev[1] = _fold_batchnorm(prev[0], prev[2], prev[1], layer)
            notes.append(f"{layer.name} (BatchNormalization): folded into {prev[3]}'s weights "
                         f"and bias (moving statistics)")
            continue
        if kind in SEPARABLE_HALVES:
            kept += _split_separable(layer)
            depthwise_kind, pointwise_kind = SEPARABLE_HALVES[kind]
            size = "1x1" if kind.endswith("2D") else "kernel-1"
            notes.append(f"{layer.name} ({kind}): split into {layer.name}_depthwise "
                         f"({depthwise_kind}) and {layer.name}_pointwise ({size} "
                         f"{pointwise_kind}), the same function")
            continue
        kept.append([kind, layer.get_config(), layer.get_weights(), layer.name])
    for entry in kept:
        kind, config, weights, name = entry
        if kind in WEIGHT_KINDS and not config.get("use_bias", True):
            # The device's convolution and dense layers always add a bias: a zero one is the same.
            # a depthwise kernel is (..., channels, multiplier): one bias per output channel
            channels = (weights[0].shape[-2] * weights[0].shape[-1] if kind in DEPTHWISE_TYPES
                        else weights[0].shape[-1])
            entry[1] = dict(config, use_bias=True)
            entry[2] = [weights[0], np.zeros(channels, np.float32)]
            notes.append(f"{name} ({kind}): given a zero bias (the device's layers have one)")
    if not notes:
        return model, []
    inp = keras.Input(shape=tuple(int(d) for d in model.input_shape[1:]), name="input")
    copies = [getattr(keras.layers, kind).from_config(config) for kind, config, _, _ in kept]
    new = keras.Sequential([inp] + copies, name=model.name)
    for copy, (_, _, weights, _) in zip(copies, kept):
        if weights:
            copy.set_weights(weights)
    return new, notes
