"""Model families sized for microcontrollers, their backbone/tail split and their computed cost.

Every family is a plain chain of named Keras layers (no branches, no BatchNorm) so that the same
layer table can be exported to the firmware, grown function-preservingly (tinycil.learn.sizing) and
costed layer by layer. ``widths`` lists the hidden widths in order: the output channels of each
convolution (depthwise convolutions keep their input's channels and take no width) and then the
units of the hidden dense layer(s). The last layer ("logits") has one unit per class, no softmax.

TensorFlow/Keras is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FAMILIES = ("mlp", "cnn2d", "cnn1d", "dscnn")

# Full widths at which each family keeps to tens of thousands of parameters for the input sizes
# the project uses (8x8 .. 28x28 images, 100x6 inertial windows, 49x10 MFCC maps).
DEFAULT_WIDTHS = {
    "mlp": [64, 32],
    "cnn2d": [16, 32, 64],
    "cnn1d": [16, 32, 32],
    "dscnn": [32, 32, 32, 32],
}

# Which family `--family auto` picks for a modality.
FAMILY_FOR_MODALITY = {"image": "cnn2d", "inertial": "cnn1d", "audio": "dscnn"}

WEIGHT_LAYER_TYPES = ("Dense", "Conv2D", "Conv1D", "DepthwiseConv2D", "DepthwiseConv1D")
# Depthwise layers keep their input's channels: they take no width of their own.
DEPTHWISE_TYPES = ("DepthwiseConv2D", "DepthwiseConv1D")


class ModelError(ValueError):
    """A model that cannot be built as asked (unknown family, widths that do not fit)."""


def family_for_modality(modality: str) -> str:
    try:
        return FAMILY_FOR_MODALITY[modality]
    except KeyError:
        raise ModelError(f"no model family for modality {modality!r}; "
                         f"choose --family from {', '.join(FAMILIES)}") from None


def expected_width_count(family: str) -> int:
    return len(DEFAULT_WIDTHS[_check_family(family)])


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ModelError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    return family


def build_model(family: str, input_shape: Sequence[int], num_classes: int,
                widths: Sequence[int], seed: int | None = None):
    """A fresh ``family`` model (He-normal kernels, zero biases) with the given hidden widths.

    The model's name is the family, so that growth and export can rebuild it.
    """
    import keras

    _check_family(family)
    widths = [int(w) for w in widths]
    if len(widths) != expected_width_count(family):
        raise ModelError(f"family {family} takes {expected_width_count(family)} widths "
                         f"(see DEFAULT_WIDTHS), got {widths}")
    if any(w < 1 for w in widths) or num_classes < 1:
        raise ModelError(f"widths and the number of classes must be positive, got {widths}, {num_classes}")
    input_shape = tuple(int(s) for s in input_shape)
    counter = iter(range(10_000))

    def init():
        # A distinct seed per layer keeps a seeded model reproducible.
        return keras.initializers.HeNormal(seed=None if seed is None else seed * 1000 + next(counter))

    L = keras.layers
    layers: list = [keras.Input(shape=input_shape, name="input")]
    if family == "mlp":
        if len(input_shape) > 1:
            layers.append(L.Flatten(name="flatten"))
        for i, w in enumerate(widths):
            layers.append(L.Dense(w, activation="relu", kernel_initializer=init(), name=f"dense{i + 1}"))
    elif family == "cnn2d":
        if len(input_shape) != 3:
            raise ModelError(f"cnn2d takes images (H, W, C), got input shape {input_shape}")
        c1, c2, d = widths
        layers += [
            L.Conv2D(c1, 3, padding="same", activation="relu", kernel_initializer=init(), name="conv1"),
            L.MaxPooling2D(2, name="pool1"),
            L.Conv2D(c2, 3, padding="same", activation="relu", kernel_initializer=init(), name="conv2"),
            L.MaxPooling2D(2, name="pool2"),
            L.Flatten(name="flatten"),
            L.Dense(d, activation="relu", kernel_initializer=init(), name="dense1"),
        ]
    elif family == "cnn1d":
        if len(input_shape) != 2:
            raise ModelError(f"cnn1d takes inertial windows (T, C), got input shape {input_shape}")
        c1, c2, d = widths
        layers += [
            L.Conv1D(c1, 5, padding="same", activation="relu", kernel_initializer=init(), name="conv1"),
            L.MaxPooling1D(2, name="pool1"),
            L.Conv1D(c2, 5, padding="same", activation="relu", kernel_initializer=init(), name="conv2"),
            L.GlobalAveragePooling1D(name="gap"),
            L.Dense(d, activation="relu", kernel_initializer=init(), name="dense1"),
        ]
    else:  # dscnn
        if len(input_shape) != 3:
            raise ModelError(f"dscnn takes MFCC maps (frames, coeffs, 1), got input shape {input_shape}")
        c0, p1, p2, d = widths
        layers += [
            L.Conv2D(c0, 3, strides=2, padding="same", activation="relu", kernel_initializer=init(), name="conv1"),
            L.DepthwiseConv2D(3, padding="same", activation="relu", depthwise_initializer=init(), name="dw1"),
            L.Conv2D(p1, 1, activation="relu", kernel_initializer=init(), name="pw1"),
            L.DepthwiseConv2D(3, padding="same", activation="relu", depthwise_initializer=init(), name="dw2"),
            L.Conv2D(p2, 1, activation="relu", kernel_initializer=init(), name="pw2"),
            L.GlobalAveragePooling2D(name="gap"),
            L.Dense(d, activation="relu", kernel_initializer=init(), name="dense1"),
        ]
    layers.append(L.Dense(num_classes, kernel_initializer=init(), name="logits"))
    return keras.Sequential(layers, name=family)


def model_family(model) -> str:
    return _check_family(model.name)


def weight_layers(model) -> list:
    return [layer for layer in model.layers if type(layer).__name__ in WEIGHT_LAYER_TYPES]


def model_widths(model) -> list[int]:
    """The hidden widths ``build_model`` was given (depthwise layers and logits excluded)."""
    out = []
    for layer in weight_layers(model)[:-1]:
        if type(layer).__name__ in DEPTHWISE_TYPES:
            continue
        out.append(int(layer.units if hasattr(layer, "units") else layer.filters))
    return out


def num_outputs(model) -> int:
    return int(weight_layers(model)[-1].units)


# The weight layers of every family in order (see build_model): what a cut may leave trainable.
WEIGHT_KINDS = {
    "mlp": ("Dense", "Dense", "Dense"),
    "cnn2d": ("Conv2D", "Conv2D", "Dense", "Dense"),
    "cnn1d": ("Conv1D", "Conv1D", "Dense", "Dense"),
    "dscnn": ("Conv2D", "DepthwiseConv2D", "Conv2D", "DepthwiseConv2D", "Conv2D", "Dense", "Dense"),
}


def weight_layer_count(family: str) -> int:
    return len(WEIGHT_KINDS[_check_family(family)])


def backbone_width_count(family: str, trainable: int) -> int:
    """How many of the family's widths belong to the frozen prefix when the last `trainable`
    weight layers train (depthwise layers and the logits take no width)."""
    kinds = WEIGHT_KINDS[_check_family(family)]
    frozen = kinds[:len(kinds) - trainable]
    return sum(1 for k in frozen if k not in DEPTHWISE_TYPES)


def split_model(model, tail_layers: int):
    """Split ``model`` into (backbone, tail) with the last ``tail_layers`` weight layers in the tail.

    Both parts share the layers (and so the weights) of ``model``. The backbone's output is the
    tail's input (the "latent"). The tail may hold any layer the device trains in float32
    (conv2d, conv1d, depthwise conv2d, pooling, dense); the backbone runs in int8. With every
    weight layer in the tail the backbone is empty (a model whose output is its input;
    quantize_backbone gives it no .tflite).
    """
    import keras

    wl = weight_layers(model)
    if not 1 <= tail_layers <= len(wl):
        raise ModelError(f"the trainable layers must number between 1 and {len(wl)} for this "
                         f"model, got {tail_layers}")
    first_tail = wl[-tail_layers]
    cut = model.layers.index(first_tail)
    input_shape = tuple(model.input_shape[1:])
    if cut > 0:
        backbone = keras.Sequential([keras.Input(shape=input_shape, name="input")] + model.layers[:cut],
                                    name=f"{model.name}_backbone")
    else:  # the identity: its output is its input
        inp = keras.Input(shape=input_shape, name="input")
        backbone = keras.Model(inp, inp, name=f"{model.name}_backbone")
    latent_shape = backbone.output_shape[1:]
    tail = keras.Sequential([keras.Input(shape=latent_shape, name="latent")] + model.layers[cut:],
                            name=f"{model.name}_tail")
    return backbone, tail


def _map_shape(shape) -> tuple[int, int, int]:
    """(H, W, C) of a Keras activation shape without the batch: images as they are, sequences
    (T, C) as one row of T, vectors (F,) as one position of F channels."""
    s = [int(d) for d in shape]
    if len(s) == 3:
        return s[0], s[1], s[2]
    if len(s) == 2:
        return 1, s[0], s[1]
    if len(s) == 1:
        return 1, 1, s[0]
    raise ModelError(f"activation shape {tuple(shape)} has an unsupported rank")


def _pair(v, one_d: bool) -> tuple[int, int]:
    v = tuple(int(x) for x in (v if isinstance(v, (tuple, list)) else (v,)))
    if one_d:
        return 1, v[0]
    return (v[0], v[1]) if len(v) == 2 else (v[0], v[0])


def tail_layer_specs(tail_model) -> list[dict]:
    """The trainable layers of a tail (split_model's second part) as the device runtime holds them.

    One dict per layer (Flatten is left out: a dense layer flattens its input map, channels
    fastest, as Keras does): "op" (conv2d, depthwise, dense, max_pool, avg_pool), "name", "relu",
    "padding" (VALID/SAME), "strides", "kernel" (window), "in_hw", "out_hw" (maps), "in_c",
    "out_c" (channels; a dense layer's units), "weights" in the runtime's layout (conv2d
    [out][kh][kw][in], depthwise [kh][kw][c], dense [out][in_h][in_w][in]) and "bias".
    Global average pooling is an average pool whose window is the whole map.
    """
    specs: list[dict] = []
    kshape = tuple(int(d) for d in tail_model.input_shape[1:])
    shape = _map_shape(kshape)
    for layer in tail_model.layers:
        kind = type(layer).__name__
        in_h, in_w, in_c = shape
        if kind == "Flatten":
            kshape = (int(np.prod(kshape)),)
            continue
        kshape = tuple(int(d) for d in layer.compute_output_shape((1,) + kshape)[1:])
        out_shape = _map_shape(kshape)
        act = getattr(layer, "activation", None)
        act_name = act.__name__ if act is not None else "linear"
        if act_name not in ("relu", "linear"):
            raise ModelError(f"layer {layer.name} has activation {act_name}; the device trains "
                             "ReLU or no activation")
        one_d = kind.endswith("1D")
        spec = {"name": layer.name, "relu": act_name == "relu", "padding": "VALID",
                "strides": (1, 1), "kernel": (1, 1), "in_hw": (in_h, in_w),
                "out_hw": out_shape[:2], "in_c": in_c, "out_c": out_shape[2],
                "weights": None, "bias": None}
        if kind in ("Conv2D", "Conv1D"):
            if tuple(layer.dilation_rate) not in ((1, 1), (1,)):
                raise ModelError(f"layer {layer.name}: dilated convolutions do not train on the device")
            k, b = (w.numpy() for w in layer.weights)
            if one_d:
                k = k[None]  # (1, k, in, out)
            spec.update(op="conv2d", padding=layer.padding.upper(),
                        strides=_pair(layer.strides, one_d), kernel=(k.shape[0], k.shape[1]),
                        weights=np.ascontiguousarray(k.transpose(3, 0, 1, 2), np.float32),
                        bias=np.asarray(b, np.float32))
        elif kind in DEPTHWISE_TYPES:
            k, b = (w.numpy() for w in layer.weights)
            if k.shape[-1] != 1:
                raise ModelError(f"layer {layer.name}: the device trains depth multiplier 1 only")
            if tuple(layer.dilation_rate) not in ((1, 1), (1,)):
                raise ModelError(f"layer {layer.name}: dilated convolutions do not train on the device")
            if one_d:
                k = k[None]  # (1, k, channels, 1): a one-row depthwise convolution
            spec.update(op="depthwise", padding=layer.padding.upper(),
                        strides=_pair(layer.strides, one_d), kernel=(k.shape[0], k.shape[1]),
                        weights=np.ascontiguousarray(k[..., 0], np.float32),
                        bias=np.asarray(b, np.float32))
        elif kind == "Dense":
            k, b = (w.numpy() for w in layer.weights)
            spec.update(op="dense", out_hw=(1, 1),
                        weights=np.ascontiguousarray(k.T.reshape(k.shape[1], in_h, in_w, in_c),
                                                     np.float32),
                        bias=np.asarray(b, np.float32))
        elif kind in ("MaxPooling2D", "MaxPooling1D", "AveragePooling2D", "AveragePooling1D"):
            spec.update(op="max_pool" if kind.startswith("Max") else "avg_pool",
                        padding=layer.padding.upper(), strides=_pair(layer.strides, one_d),
                        kernel=_pair(layer.pool_size, one_d))
        elif kind in ("GlobalAveragePooling2D", "GlobalAveragePooling1D"):
            spec.update(op="avg_pool", kernel=(in_h, in_w), strides=(1, 1), out_hw=(1, 1))
        else:
            raise ModelError(f"layer {layer.name} ({kind}) cannot train on the device; move the "
                             "cut after it (fewer --trainable layers)")
        specs.append(spec)
        shape = out_shape
    if not specs or specs[-1]["op"] != "dense" or specs[-1]["relu"]:
        raise ModelError("the tail must end with the logits: a dense layer without activation")
    return specs


def weight_kinds(model) -> tuple[str, ...]:
    """The types of a model's weight layers in order (a family's WEIGHT_KINDS, or those of a
    user's own model)."""
    return tuple(type(layer).__name__ for layer in weight_layers(model))


def layer_channels(family, widths, outputs: int) -> list[int]:
    """Output channels of every weight layer of a family model with these widths (depthwise
    layers keep their input's channels, the logits have `outputs`). `family` is a family's name
    or the weight layers' types (weight_kinds of any model)."""
    kinds = WEIGHT_KINDS[_check_family(family)] if isinstance(family, str) else tuple(family)
    it = iter(int(w) for w in widths)
    out, ch = [], None
    for i, kind in enumerate(kinds):
        if i == len(kinds) - 1:
            ch = int(outputs)
        elif kind not in DEPTHWISE_TYPES:
            ch = next(it)
        out.append(ch)
    return out


def count_cost(model) -> dict:
    """Parameters, FLOPs per sample and activation memory of ``model``, layer by layer.

    How operations are counted (per sample, float32 training):
      * A multiply-accumulate is 2 FLOPs. Dense (n in, m out): n*m MACs; Conv (output H'xW'xC',
        kernel kh x kw over C in): H'W'C' * kh*kw*C MACs; depthwise: H'W'C * kh*kw MACs.
      * Forward: 2*MACs + one add per output for the bias + one op per output for ReLU.
        Max pooling: (window - 1) comparisons per output; average pooling: window ops per output
        (window - 1 adds and one scale); global average pooling: one add per input element (the
        final division is folded into it); Flatten: free.
      * Backward: weight gradient 2*MACs + one add per output for the bias gradient; input
        gradient 2*MACs, except for the first weight layer, which needs none; ReLU backward one op
        per output. Layers before the first weight layer have no backward at all; max-pool
        backward only routes (0 FLOPs); average pooling backward window ops per output, global
        average pooling one op per input element.
    activation_bytes: float32 bytes of the input and every layer output of one sample, i.e. what
    training keeps for the backward pass. peak_inference_bytes: the largest input+output pair, what
    a forward pass alone needs with two ping-pong buffers.
    """
    layers = []
    shape = tuple(int(s) for s in model.input_shape[1:])
    total_act = _prod(shape)
    peak = 0
    seen_weight_layer = False
    for layer in model.layers:
        kind = type(layer).__name__
        out_shape = tuple(int(s) for s in layer.compute_output_shape((1,) + shape)[1:])
        n_in, n_out = _prod(shape), _prod(out_shape)
        params = int(sum(_prod(w.shape) for w in layer.weights))
        relu = getattr(layer, "activation", None) is not None and layer.activation.__name__ == "relu"
        macs, fwd, bwd = 0, 0, 0
        if kind in WEIGHT_LAYER_TYPES:
            if kind == "Dense":
                macs = shape[-1] * layer.units * (n_out // layer.units)
            elif kind in DEPTHWISE_TYPES:
                macs = n_out * _prod(layer.kernel_size)
            else:  # Conv1D / Conv2D
                macs = n_out * _prod(layer.kernel_size) * shape[-1]
            fwd = 2 * macs + n_out + (n_out if relu else 0)
            bwd = 2 * macs + n_out + (n_out if relu else 0)
            if seen_weight_layer:
                bwd += 2 * macs
            seen_weight_layer = True
        elif kind in ("MaxPooling2D", "MaxPooling1D"):
            fwd = n_out * (_prod(layer.pool_size) - 1)
        elif kind in ("AveragePooling2D", "AveragePooling1D"):
            # Each output sums its window and scales once; backward hands every output's
            # gradient, scaled, to each position of its window.
            fwd = n_out * _prod(layer.pool_size)
            bwd = fwd if seen_weight_layer else 0
        elif kind in ("GlobalAveragePooling2D", "GlobalAveragePooling1D"):
            fwd = n_in
            bwd = n_in if seen_weight_layer else 0
        elif kind != "Flatten":
            raise ModelError(f"count_cost does not know layer type {kind}")
        layers.append({"name": layer.name, "type": kind, "output_shape": list(out_shape),
                       "params": params, "macs": macs, "fwd_flops": fwd, "bwd_flops": bwd})
        total_act += n_out
        peak = max(peak, n_in + n_out)
        shape = out_shape
    return {
        "params": sum(l["params"] for l in layers),
        "macs": sum(l["macs"] for l in layers),
        "fwd_flops": sum(l["fwd_flops"] for l in layers),
        "bwd_flops": sum(l["bwd_flops"] for l in layers),
        "activation_bytes": 4 * total_act,
        "peak_inference_bytes": 4 * peak,
        "layers": layers,
    }


def train_flops_per_sample(model) -> int:
    cost = count_cost(model)
    return cost["fwd_flops"] + cost["bwd_flops"]


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
