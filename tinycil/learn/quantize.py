"""Full-int8 quantisation of the frozen backbone and read-back of its parameters.

The backbone is converted with TensorFlow Lite's post-training quantiser (representative data
set, int8 kernels only, int8 input and output, per-channel weights) and run with the LiteRT
interpreter's reference kernels, which the firmware's int8 kernels must match bit for bit
(`make_interpreter` says why those and not the optimised ones).
`read_layers` returns, op by op, everything an exporter needs to write the model as C arrays.

The model is converted with a fixed batch of one sample: that is what the device runs, and it
keeps shape arithmetic (SHAPE/STRIDED_SLICE/PACK ops for a dynamic batch) out of the op list.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np

#: Samples of the representative data set used for calibration (evenly spaced over the input).
CALIBRATION_SAMPLES = 500


class QuantizeError(RuntimeError):
    """The backbone could not be quantised or the .tflite could not be read."""


# --------------------------------------------------------------------------------------------
# Plain int8 arithmetic (the same rounding as TFLite's QUANTIZE op: half away from zero)


def quantize_inputs(x_float, scale: float, zero_point: int) -> np.ndarray:
    """float -> int8 with the given affine parameters, saturating at [-128, 127]."""
    x = np.asarray(x_float, dtype=np.float64) / float(scale)
    q = np.sign(x) * np.floor(np.abs(x) + 0.5) + int(zero_point)
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(x_int8, scale: float, zero_point: int) -> np.ndarray:
    """int8 -> float32: (q - zero_point) * scale."""
    q = np.asarray(x_int8).astype(np.int32)
    return ((q - int(zero_point)) * np.float32(scale)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Interpreter and schema, from LiteRT (or tflite_runtime when that is what the user has)


def _litert():
    """(Interpreter class, OpResolverType enum or None)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType
    except ImportError:
        pass
    try:  # pragma: no cover - only on machines with tflite_runtime and without LiteRT
        from tflite_runtime.interpreter import Interpreter

        try:
            from tflite_runtime.interpreter import OpResolverType
        except ImportError:
            OpResolverType = None
        return Interpreter, OpResolverType
    except Exception as exc:  # tflite_runtime 2.14 fails to import with numpy 2
        raise QuantizeError(
            "no TFLite interpreter available: install LiteRT with `pip install ai-edge-litert`"
        ) from exc


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def make_interpreter(tflite_bytes: bytes, reference_kernels: bool = True):
    """An allocated interpreter running LiteRT's reference kernels, which the firmware's int8
    kernels reproduce bit for bit; `reference_kernels=False` gives the optimised built-in kernels.

    Why the reference kernels: LiteRT's kernels disagree on how a requantised value half-way
    between two integers rounds, which shows in linear layers (a ReLU clamps the negative
    values, where the rules differ) on about one output in a thousand:
      - reference CONV_2D and DEPTHWISE_CONV_2D: TFLite's MultiplyByQuantizedMultiplier (a
        rounding high multiply, then a shift rounding ties away from zero), FULLY_CONNECTED one
        rounding of the exact product; fixed rules, whatever the layer's shape;
      - optimised CONV_2D and FULLY_CONNECTED: the shift rounds ties up; optimised
        DEPTHWISE_CONV_2D rounds them up in its SIMD blocks of channels and away from zero in
        the channels left over, so its rule depends on the channel count and on how a LiteRT
        version blocks them: not a rule a device can follow.
    The device therefore follows the reference kernels, and the host runs them too (about seven
    times slower than the optimised ones, about a millisecond per sample of a 1.3 M MAC backbone).
    XNNPACK (a default delegate) requantises in floating point and is never used.
    """
    Interpreter, OpResolverType = _litert()
    kwargs = {}
    if OpResolverType is not None:
        kwargs["experimental_op_resolver_type"] = (
            OpResolverType.BUILTIN_REF
            if reference_kernels
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    interpreter = Interpreter(model_content=bytes(tflite_bytes), **kwargs)
    interpreter.allocate_tensors()
    return interpreter


@contextlib.contextmanager
def _captured_output(captured: list):
    """Send what the converter prints (on the C file descriptors too) to a temporary file;
    `captured` receives the text once the block ends.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    python_text = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            # Python-level prints go to sys.stdout, which need not be file descriptor 1.
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(python_text),
                contextlib.redirect_stderr(python_text),
            ):
                warnings.simplefilter("ignore")
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(python_text.getvalue() + sink.read().decode("utf-8", "replace"))


# --------------------------------------------------------------------------------------------
# The quantised model


@dataclass
class QuantizedModel:
    """A full-int8 .tflite with its input/output quantisation, runnable on the host."""

    tflite_bytes: bytes
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    input_shape: tuple  # one sample, without the batch dimension
    output_shape: tuple
    _interpreter: object = field(default=None, repr=False, compare=False)

    def interpreter(self):
        if self._interpreter is None:
            self._interpreter = make_interpreter(self.tflite_bytes)
        return self._interpreter

    @property
    def is_identity(self) -> bool:
        """An empty backbone (the whole model trains on the device): no .tflite, output = input."""
        return len(self.tflite_bytes) == 0

    def run(self, x_int8) -> np.ndarray:
        """int8 samples [n, *input_shape] (or one sample) -> int8 outputs [n, *output_shape]."""
        x = np.asarray(x_int8)
        if self.is_identity and x.dtype == np.int8:
            return x.copy()
        if x.dtype != np.int8:
            raise QuantizeError(
                f"run() takes int8 input, got {x.dtype}: quantise with "
                "quantize_inputs(x, q.input_scale, q.input_zero_point) or use run_float()"
            )
        single = x.shape == tuple(self.input_shape)
        if single:
            x = x[None]
        if x.shape[1:] != tuple(self.input_shape):
            raise QuantizeError(
                f"input samples have shape {x.shape[1:]}, the model expects {self.input_shape}"
            )
        interp = self.interpreter()
        inp = interp.get_input_details()[0]["index"]
        out = interp.get_output_details()[0]["index"]
        result = np.empty((len(x), *self.output_shape), dtype=np.int8)
        # The model has a fixed batch of one (as on the device): one invoke per sample.
        for i in range(len(x)):
            interp.set_tensor(inp, x[i : i + 1])
            interp.invoke()
            result[i] = interp.get_tensor(out)[0]
        return result[0] if single else result

    def run_float(self, x_float) -> np.ndarray:
        """Quantise float inputs, run the int8 model, dequantise the outputs."""
        q = quantize_inputs(x_float, self.input_scale, self.input_zero_point)
        return dequantize(self.run(q), self.output_scale, self.output_zero_point)

    def layers(self) -> list[dict]:
        return [] if self.is_identity else read_layers(self.tflite_bytes)


def identity_quantization(representative_x) -> tuple[float, int]:
    """int8 (scale, zero point) of inputs that no backbone quantises: TFLite's asymmetric rule
    over the calibration range widened to hold 0 (scale = (max - min) / 255, zero point
    -128 - min / scale, rounded)."""
    x = np.asarray(representative_x, np.float64)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if hi == lo:
        hi = lo + 1.0
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def quantize_backbone(backbone, representative_x) -> QuantizedModel:
    """Convert a Keras model to full int8 TFLite (int8 input and output, per-channel weights).

    representative_x: float32 samples [n, *input_shape] as the model sees them in use; up to
    CALIBRATION_SAMPLES evenly spaced ones calibrate the activation ranges.
    """
    import keras
    import tensorflow as tf

    rep = np.asarray(representative_x, dtype=np.float32)
    input_shape = tuple(int(d) for d in backbone.input_shape[1:])
    if rep.ndim != len(input_shape) + 1 or rep.shape[1:] != input_shape:
        raise QuantizeError(
            f"representative_x must have shape [n, {', '.join(map(str, input_shape))}] "
            f"to match the backbone's input, got {rep.shape}"
        )
    if len(rep) == 0:
        raise QuantizeError("representative_x is empty: pass some training samples")
    if all(type(layer).__name__ == "InputLayer" for layer in backbone.layers):
        # Nothing frozen: the device takes the int8 input itself as the trainable part's input.
        scale, zero_point = identity_quantization(rep)
        return QuantizedModel(tflite_bytes=b"", input_scale=scale, input_zero_point=zero_point,
                              output_scale=scale, output_zero_point=zero_point,
                              input_shape=input_shape, output_shape=input_shape)
    picks = np.linspace(0, len(rep) - 1, min(len(rep), CALIBRATION_SAMPLES)).round().astype(int)
    rep = rep[np.unique(picks)]

    # Batch of one, fixed: see the module docstring.
    inp = keras.Input(batch_shape=(1, *input_shape))
    fixed = keras.Model(inp, backbone(inp))

    def dataset():
        for i in range(len(rep)):
            yield [rep[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    log: list[str] = []
    try:
        with _captured_output(log):
            tflite_bytes = converter.convert()
    except Exception as exc:
        tail = "\n".join(log[0].splitlines()[-20:]) if log else ""
        raise QuantizeError(
            f"int8 conversion of the backbone failed: {exc}\nconverter output (last lines):\n{tail}"
        ) from exc

    interp = make_interpreter(tflite_bytes)
    i_det = interp.get_input_details()[0]
    o_det = interp.get_output_details()[0]
    i_scale, i_zp = i_det["quantization"]
    o_scale, o_zp = o_det["quantization"]
    return QuantizedModel(
        tflite_bytes=bytes(tflite_bytes),
        input_scale=float(i_scale),
        input_zero_point=int(i_zp),
        output_scale=float(o_scale),
        output_zero_point=int(o_zp),
        input_shape=tuple(int(d) for d in i_det["shape"][1:]),
        output_shape=tuple(int(d) for d in o_det["shape"][1:]),
        _interpreter=interp,
    )


# --------------------------------------------------------------------------------------------
# Read-back of the layers


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _tensor_info(detail: dict) -> dict:
    qp = detail["quantization_parameters"]
    return {
        "index": int(detail["index"]),
        "name": detail["name"],
        "shape": tuple(int(d) for d in detail["shape"]),
        "dtype": np.dtype(detail["dtype"]).name,
        "scales": np.asarray(qp["scales"], dtype=np.float32),
        "zero_points": np.asarray(qp["zero_points"], dtype=np.int64),
        "quantized_dimension": int(qp["quantized_dimension"]),
    }


def _activation_info(info: dict) -> dict:
    """Per-tensor activation: scale and zero point as scalars."""
    out = {"index": info["index"], "shape": info["shape"], "dtype": info["dtype"]}
    if len(info["scales"]) == 1:
        out["scale"] = float(info["scales"][0])
        out["zero_point"] = int(info["zero_points"][0])
    else:
        out["scale"], out["zero_point"] = None, None
    return out


def _options(op_t, schema) -> dict:
    """Builtin options of an operator as a flat dict with readable enum values."""
    opts = op_t.builtinOptions
    if opts is None:
        return {}
    padding = _enum_names(schema.Padding)
    activation = _enum_names(schema.ActivationFunctionType)
    renames = {
        "strideH": "stride_h",
        "strideW": "stride_w",
        "dilationHFactor": "dilation_h",
        "dilationWFactor": "dilation_w",
        "filterHeight": "filter_h",
        "filterWidth": "filter_w",
        "depthMultiplier": "depth_multiplier",
        "fusedActivationFunction": "activation",
        "newShape": "new_shape",
        "keepNumDims": "keep_num_dims",
    }
    result = {}
    for key, value in vars(opts).items():
        name = renames.get(key, key)
        if key == "padding":
            value = padding.get(value, value)
        elif key == "fusedActivationFunction":
            value = activation.get(value, value)
        elif isinstance(value, np.ndarray):
            value = [int(v) for v in value]
        result[name] = value
    return result


def read_layers(tflite_bytes: bytes) -> list[dict]:
    """The operators of a (single-subgraph) .tflite in execution order, one dict each:

    op             builtin operator name: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
                   AVERAGE_POOL_2D, MAX_POOL_2D, RESHAPE, ...
    input, output  the data tensors: index, shape (with the batch of 1), dtype, scale, zero_point
    weights        int8 array in TFLite layout or None: CONV_2D [out, kh, kw, in],
                   DEPTHWISE_CONV_2D [1, kh, kw, in * multiplier], FULLY_CONNECTED [out, in]
    weight_scales, weight_zero_points, weight_quantized_dimension   per output channel
    bias           int32 [out] or None; an all-zero bias that the converter dropped comes back
                   as zeros with bias_present False; its scale is input scale * weight scale
    bias_scales    float32 [out] or None
    options        builtin options from the flatbuffer: stride_h, stride_w, padding ("SAME" or
                   "VALID"), activation ("NONE", "RELU", "RELU6", ...), dilation_h/w,
                   filter_h/w (pooling), depth_multiplier, new_shape (reshape), ...
    inputs, outputs  every operand tensor (None where absent) with its quantisation; "data"
                   holds the value of constant operands (e.g. RESHAPE's shape, MEAN's axes)

    Tensors and quantisation come from the interpreter's tensor details; the options (which
    the interpreter does not expose) from the flatbuffer via the TFLite schema module.
    """
    schema = _schema()
    interp = make_interpreter(tflite_bytes)
    model_t = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    if len(model_t.subgraphs) != 1:
        raise QuantizeError(f"expected one subgraph, the model has {len(model_t.subgraphs)}")
    fb_ops = model_t.subgraphs[0].operators
    op_names = _enum_names(schema.BuiltinOperator)
    details = {int(d["index"]): d for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    if len(ops) != len(fb_ops):
        raise QuantizeError(
            f"interpreter lists {len(ops)} ops but the flatbuffer holds {len(fb_ops)}: "
            "the model was rewritten by a delegate"
        )

    # Constant operands (weights, biases, reshape shapes, reduction axes) are the tensors no op
    # produces and that are not the model's input.
    produced = {int(t) for op in ops for t in op["outputs"]}
    produced.update(int(d["index"]) for d in interp.get_input_details())

    def operand(i: int):
        if i < 0:
            return None
        info = _tensor_info(details[i])
        info["data"] = None if i in produced else np.array(interp.get_tensor(i))
        return info

    layers = []
    for op in ops:
        fb_op = fb_ops[int(op["index"])]
        code = model_t.operatorCodes[fb_op.opcodeIndex]
        fb_name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        if fb_name != op["op_name"]:
            raise QuantizeError(
                f"op {op['index']}: interpreter says {op['op_name']}, flatbuffer says {fb_name}"
            )
        in_idx = [int(i) for i in op["inputs"]]
        out_idx = [int(i) for i in op["outputs"]]
        inputs = [operand(i) for i in in_idx]
        outputs = [_tensor_info(details[i]) for i in out_idx]
        layer = {
            "index": int(op["index"]),
            "op": op["op_name"],
            "input": _activation_info(inputs[0]),
            "output": _activation_info(outputs[0]),
            "weights": None,
            "weight_scales": None,
            "weight_zero_points": None,
            "weight_quantized_dimension": None,
            "bias": None,
            "bias_scales": None,
            "bias_present": False,
            "options": _options(fb_op, schema),
            "inputs": inputs,
            "outputs": outputs,
        }
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = inputs[1]
            layer["weights"] = np.array(interp.get_tensor(w["index"]), dtype=np.int8)
            layer["weight_scales"] = w["scales"]
            layer["weight_zero_points"] = w["zero_points"]
            layer["weight_quantized_dimension"] = w["quantized_dimension"]
            out_channels = layer["weights"].shape[w["quantized_dimension"]]
            b = inputs[2] if len(inputs) > 2 else None
            if b is not None:
                layer["bias"] = np.array(interp.get_tensor(b["index"]), dtype=np.int32)
                layer["bias_scales"] = b["scales"]
                layer["bias_present"] = True
            else:
                layer["bias"] = np.zeros(out_channels, dtype=np.int32)
                scales = np.broadcast_to(w["scales"], (out_channels,))
                layer["bias_scales"] = (scales * np.float32(layer["input"]["scale"])).astype(
                    np.float32
                )
        layers.append(layer)
    return layers


def dequantized_weights(layer: dict) -> np.ndarray:
    """A layer's int8 weights as float32, per channel along its quantized dimension."""
    w = layer["weights"].astype(np.float32)
    axis = layer["weight_quantized_dimension"]
    shape = [1] * w.ndim
    shape[axis] = -1
    scales = np.asarray(layer["weight_scales"], dtype=np.float32)
    zps = np.asarray(layer["weight_zero_points"], dtype=np.float32)
    if scales.size == 1:
        return (w - zps.item()) * scales.item()
    return (w - zps.reshape(shape)) * scales.reshape(shape)
