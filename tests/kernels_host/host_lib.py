"""Host build of the firmware kernels (g++ -> shared library) and numpy wrappers over its C API.

The library is compiled once per test process from the same sources as the firmware, with the
same floating-point contract (-ffp-contract=off), so its float results equal the firmware's bit
for bit.
"""

from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
KERNELS_DIR = ROOT / "firmware" / "lib" / "kernels"
CAPI = Path(__file__).resolve().parent / "kernels_capi.cpp"

HOST_FLAGS = ["-O2", "-std=c++17", "-ffp-contract=off", "-fno-exceptions", "-fno-rtti",
              "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared"]

PADDING = {"valid": 0, "same": 1}


def kernel_sources() -> list[Path]:
    return sorted(KERNELS_DIR.glob("*.cpp"))


@functools.lru_cache(maxsize=1)
def build_library() -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        raise RuntimeError("g++ not found: install the host C++ compiler (Debian: g++)")
    out_dir = Path(tempfile.mkdtemp(prefix="tinycil-kernels-"))
    lib = out_dir / "libtckernels.so"
    cmd = [compiler, *HOST_FLAGS, f"-I{KERNELS_DIR}", "-o", str(lib),
           *map(str, kernel_sources()), str(CAPI)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"host kernel build failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return lib


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


class Kernels:
    """Numpy-level access to the kernels. Shapes follow the firmware: NHWC activations,
    conv weights [out][kh][kw][in], depthwise [kh][kw][in*mult], dense [out][in]."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        for name in ("tck_softmax_ce_f32", "tck_clip_grad_global_norm_f32",
                     "tck_f32_sum_squares", "tck_softmax_ce_row_f32"):
            getattr(self.lib, name).restype = ctypes.c_float
        self.lib.tck_f32_sum_squares.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_float]
        self.lib.tck_softmax_ce_row_f32.argtypes = [ctypes.c_void_p, ctypes.c_int32,
                                                    ctypes.c_int32, ctypes.c_void_p,
                                                    ctypes.c_int32, ctypes.c_float,
                                                    ctypes.c_void_p]
        self.lib.tck_sgd_momentum_fma_f32.argtypes = [ctypes.c_void_p] * 3 + [
            ctypes.c_int32] + [ctypes.c_float] * 3
        self.lib.tck_sgd_momentum_outer_f32.argtypes = [ctypes.c_void_p] * 2 + [
            ctypes.c_int32] * 2 + [ctypes.c_void_p] * 2 + [ctypes.c_float] * 3
        self.lib.tck_multiply_by_quantized_multiplier.restype = ctypes.c_int32
        self.lib.tck_multiply_by_quantized_multiplier.argtypes = [ctypes.c_int32] * 3
        self.lib.tck_requant_channel_apply.restype = ctypes.c_int32
        for name in ("tck_multiply_by_quantized_multiplier_single",
                     "tck_fully_connected_requant"):
            getattr(self.lib, name).restype = ctypes.c_int32
            getattr(self.lib, name).argtypes = [ctypes.c_int32] * 3
        self.lib.tck_requant_channel_apply.argtypes = [ctypes.c_int32] * 3
        self.lib.tck_quantize_multiplier.argtypes = [ctypes.c_double, ctypes.c_void_p,
                                                     ctypes.c_void_p]
        for name in ("tck_sgd_momentum_f32",):
            getattr(self.lib, name).argtypes = [ctypes.c_void_p] * 3 + [
                ctypes.c_int32, ctypes.c_float, ctypes.c_float]
        self.lib.tck_clip_grad_global_norm_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                                           ctypes.c_int32, ctypes.c_float]
        for name in ("tck_quantize_s8", "tck_dequantize_s8"):
            getattr(self.lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32,
                                                ctypes.c_float, ctypes.c_int32]

    # -- geometry ---------------------------------------------------------------------------
    @staticmethod
    def geometry(x_shape, out_c, k, stride, padding, mult=1) -> np.ndarray:
        b, h, w, c = x_shape
        kh, kw = (k, k) if np.isscalar(k) else k
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        return np.array([b, h, w, c, out_c, kh, kw, sh, sw, PADDING[padding], mult],
                        dtype=np.int32)

    def window(self, g: np.ndarray) -> tuple[int, int, int, int]:
        """(out_h, out_w, pad_top, pad_left) of a window geometry, as the kernels compute them."""
        out = np.zeros(4, np.int32)
        if self.lib.tck_window_dims(_ptr(g), _ptr(out)) != 0:
            raise ValueError(f"invalid window geometry {g.tolist()}")
        return int(out[0]), int(out[1]), int(out[2]), int(out[3])

    def out_hw(self, g: np.ndarray) -> tuple[int, int]:
        return self.window(g)[:2]

    # -- float32 ----------------------------------------------------------------------------
    def conv2d_f32_fwd(self, x, w, b, stride, padding):
        x, w, b = _f32(x), _f32(w), _f32(b)
        g = self.geometry(x.shape, w.shape[0], w.shape[1:3], stride, padding)
        oh, ow = self.out_hw(g)
        y = np.zeros((x.shape[0], oh, ow, w.shape[0]), np.float32)
        assert self.lib.tck_conv2d_f32_fwd(_ptr(g), _ptr(x), _ptr(w), _ptr(b), _ptr(y)) == 0
        return y

    def conv2d_f32_bwd(self, x, w, dy, stride, padding, need_dx=True):
        """need_dx False passes no input gradient (dx None), as for a model's first layer."""
        x, w, dy = _f32(x), _f32(w), _f32(dy)
        g = self.geometry(x.shape, w.shape[0], w.shape[1:3], stride, padding)
        dx = np.zeros_like(x) if need_dx else None
        dw, db = np.zeros_like(w), np.zeros(w.shape[0], np.float32)
        assert self.lib.tck_conv2d_f32_bwd(_ptr(g), _ptr(x), _ptr(w), _ptr(dy), _ptr(dx),
                                           _ptr(dw), _ptr(db)) == 0
        return dx, dw, db

    def depthwise_f32_fwd(self, x, w, b, stride, padding, mult):
        x, w, b = _f32(x), _f32(w), _f32(b)
        g = self.geometry(x.shape, x.shape[3] * mult, w.shape[0:2], stride, padding, mult)
        oh, ow = self.out_hw(g)
        y = np.zeros((x.shape[0], oh, ow, x.shape[3] * mult), np.float32)
        assert self.lib.tck_depthwise_f32_fwd(_ptr(g), _ptr(x), _ptr(w), _ptr(b), _ptr(y)) == 0
        return y

    def depthwise_f32_bwd(self, x, w, dy, stride, padding, mult):
        x, w, dy = _f32(x), _f32(w), _f32(dy)
        g = self.geometry(x.shape, x.shape[3] * mult, w.shape[0:2], stride, padding, mult)
        dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros(w.shape[-1], np.float32)
        assert self.lib.tck_depthwise_f32_bwd(_ptr(g), _ptr(x), _ptr(w), _ptr(dy), _ptr(dx),
                                              _ptr(dw), _ptr(db)) == 0
        return dx, dw, db

    def pool_f32_fwd(self, kind, x, k, stride, padding):
        x = _f32(x)
        g = self.geometry(x.shape, x.shape[3], k, stride, padding)
        oh, ow = self.out_hw(g)
        y = np.zeros((x.shape[0], oh, ow, x.shape[3]), np.float32)
        assert self.lib.tck_pool_f32({"max": 0, "avg": 1}[kind], 0, _ptr(g), _ptr(x), None,
                                     _ptr(y)) == 0
        return y

    def pool_f32_bwd(self, kind, x, dy, k, stride, padding):
        x, dy = _f32(x), _f32(dy)
        g = self.geometry(x.shape, x.shape[3], k, stride, padding)
        dx = np.zeros_like(x)
        assert self.lib.tck_pool_f32({"max": 0, "avg": 1}[kind], 1, _ptr(g), _ptr(x), _ptr(dy),
                                     _ptr(dx)) == 0
        return dx

    def dense_f32_fwd(self, x, w, b):
        x, w, b = _f32(x), _f32(w), _f32(b)
        y = np.zeros((x.shape[0], w.shape[0]), np.float32)
        self.lib.tck_dense_f32_fwd(x.shape[0], x.shape[1], w.shape[0], _ptr(x), _ptr(w),
                                   _ptr(b), _ptr(y))
        return y

    def dense_f32_bwd(self, x, w, dy):
        x, w, dy = _f32(x), _f32(w), _f32(dy)
        dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros(w.shape[0], np.float32)
        self.lib.tck_dense_f32_bwd(x.shape[0], x.shape[1], w.shape[0], _ptr(x), _ptr(w),
                                   _ptr(dy), _ptr(dx), _ptr(dw), _ptr(db))
        return dx, dw, db

    def relu_f32(self, x, dy=None, six=False):
        x = _f32(x)
        out = np.zeros_like(x)
        dyp = None if dy is None else _f32(dy)
        self.lib.tck_relu_f32(int(six), int(dy is not None), _ptr(x), _ptr(dyp), _ptr(out),
                              x.size)
        return out

    def softmax_ce_f32(self, logits, labels, mask=None, num_valid=None):
        logits = _f32(logits)
        labels = np.ascontiguousarray(labels, np.int32)
        b, c = logits.shape
        m = None if mask is None else np.ascontiguousarray(mask, np.uint8)
        dz = np.zeros_like(logits)
        loss = self.lib.tck_softmax_ce_f32(_ptr(logits), _ptr(labels), b, c, _ptr(m),
                                           c if num_valid is None else num_valid, _ptr(dz))
        return float(loss), dz

    def sgd_momentum_f32(self, w, v, g, lr, momentum):
        w, v, g = _f32(w).copy(), _f32(v).copy(), _f32(g)
        self.lib.tck_sgd_momentum_f32(_ptr(w), _ptr(v), _ptr(g), w.size, lr, momentum)
        return w, v

    def sgd_momentum_fma_f32(self, w, v, g, lr, momentum, scale=1.0):
        w, v, g = _f32(w).copy(), _f32(v).copy(), _f32(g)
        self.lib.tck_sgd_momentum_fma_f32(_ptr(w), _ptr(v), _ptr(g), w.size, lr, momentum, scale)
        return w, v

    def sgd_momentum_outer_f32(self, w, v, dy, x, lr, momentum, scale=1.0):
        """w, v [rows][cols]; the gradient is the outer product dy x^T (never stored)."""
        w, v, dy, x = _f32(w).copy(), _f32(v).copy(), _f32(dy), _f32(x)
        self.lib.tck_sgd_momentum_outer_f32(_ptr(w), _ptr(v), w.shape[0], w.shape[1], _ptr(dy),
                                            _ptr(x), lr, momentum, scale)
        return w, v

    def sum_squares_f32(self, p, acc=0.0):
        p = _f32(p)
        return float(np.float32(self.lib.tck_f32_sum_squares(_ptr(p), p.size, acc)))

    def dense_f32_bwd_acc(self, x, w, dy, dw, db, accumulate, want_dx=True):
        """Adds (or, accumulate=False, writes) the gradients of the rows of x/dy into dw, db."""
        x, w, dy = _f32(x), _f32(w), _f32(dy)
        dw, db = _f32(dw).copy(), _f32(db).copy()
        dx = np.zeros_like(x) if want_dx else None
        self.lib.tck_dense_f32_bwd_acc(x.shape[0], x.shape[1], w.shape[0], _ptr(x), _ptr(w),
                                       _ptr(dy), _ptr(dx), _ptr(dw), _ptr(db), int(accumulate))
        return dx, dw, db

    def softmax_ce_row_f32(self, z, label, scale, mask=None, num_valid=None):
        z = _f32(z)
        m = None if mask is None else np.ascontiguousarray(mask, np.uint8)
        dz = np.zeros_like(z)
        loss = self.lib.tck_softmax_ce_row_f32(_ptr(z), int(label), z.size, _ptr(m),
                                               z.size if num_valid is None else num_valid,
                                               scale, _ptr(dz))
        return float(loss), dz

    def clip_grad_global_norm_f32(self, grads, max_norm):
        sizes = np.array([g.size for g in grads], np.int32)
        flat = np.concatenate([_f32(g).ravel() for g in grads])
        norm = self.lib.tck_clip_grad_global_norm_f32(_ptr(flat), _ptr(sizes), len(grads),
                                                      max_norm)
        out, at = [], 0
        for g in grads:
            out.append(flat[at:at + g.size].reshape(g.shape))
            at += g.size
        return float(norm), out

    def expf(self, x):
        x = _f32(x)
        y = np.zeros_like(x)
        self.lib.tck_expf(_ptr(x), _ptr(y), x.size)
        return y

    def logf(self, x):
        x = _f32(x)
        y = np.zeros_like(x)
        self.lib.tck_logf(_ptr(x), _ptr(y), x.size)
        return y

    # -- int8 -------------------------------------------------------------------------------
    @staticmethod
    def _qp(input_zp, output_zp, act_min, act_max, per_channel):
        return np.array([-input_zp, output_zp, act_min, act_max, int(per_channel)], np.int32)

    def conv2d_s8_scratch_bytes(self, x_shape, out_c, k, stride, padding, out_block) -> int:
        g = self.geometry(x_shape, out_c, k, stride, padding)
        return int(self.lib.tck_conv2d_s8_scratch_bytes(_ptr(g), out_block))

    def conv2d_s8(self, x, w, b, stride, padding, input_zp, output_zp, mult, shift,
                  act=(-128, 127), out_block=64):
        x = np.ascontiguousarray(x, np.int8)
        w = np.ascontiguousarray(w, np.int8)
        b = np.ascontiguousarray(b, np.int32)
        mult = np.ascontiguousarray(mult, np.int32)
        shift = np.ascontiguousarray(shift, np.int32)
        g = self.geometry(x.shape, w.shape[0], w.shape[1:3], stride, padding)
        oh, ow = self.out_hw(g)
        y = np.zeros((x.shape[0], oh, ow, w.shape[0]), np.int8)
        qp = self._qp(input_zp, output_zp, act[0], act[1], mult.size > 1)
        rc = self.lib.tck_conv2d_s8(_ptr(g), _ptr(qp), _ptr(mult), _ptr(shift), _ptr(x),
                                    _ptr(w), _ptr(b), _ptr(y), out_block)
        assert rc == 0, rc
        return y

    def depthwise_s8(self, x, w, b, stride, padding, mult_depth, input_zp, output_zp, mult,
                     shift, act=(-128, 127)):
        x = np.ascontiguousarray(x, np.int8)
        w = np.ascontiguousarray(w, np.int8)
        b = np.ascontiguousarray(b, np.int32)
        mult = np.ascontiguousarray(mult, np.int32)
        shift = np.ascontiguousarray(shift, np.int32)
        out_c = x.shape[3] * mult_depth
        g = self.geometry(x.shape, out_c, w.shape[0:2], stride, padding, mult_depth)
        oh, ow = self.out_hw(g)
        y = np.zeros((x.shape[0], oh, ow, out_c), np.int8)
        qp = self._qp(input_zp, output_zp, act[0], act[1], mult.size > 1)
        assert self.lib.tck_depthwise_s8(_ptr(g), _ptr(qp), _ptr(mult), _ptr(shift), _ptr(x),
                                         _ptr(w), _ptr(b), _ptr(y)) == 0
        return y

    def fully_connected_s8(self, x, w, b, input_zp, output_zp, mult, shift, act=(-128, 127)):
        x = np.ascontiguousarray(x, np.int8)
        w = np.ascontiguousarray(w, np.int8)
        b = None if b is None else np.ascontiguousarray(b, np.int32)
        mult = np.ascontiguousarray(mult, np.int32)
        shift = np.ascontiguousarray(shift, np.int32)
        y = np.zeros((x.shape[0], w.shape[0]), np.int8)
        qp = self._qp(input_zp, output_zp, act[0], act[1], mult.size > 1)
        self.lib.tck_fully_connected_s8(x.shape[0], x.shape[1], w.shape[0], _ptr(qp),
                                        _ptr(mult), _ptr(shift), _ptr(x), _ptr(w), _ptr(b),
                                        _ptr(y))
        return y

    def pool_s8(self, kind, x, k, stride, padding, act=(-128, 127)):
        x = np.ascontiguousarray(x, np.int8)
        g = self.geometry(x.shape, x.shape[3], k, stride, padding)
        oh, ow = self.out_hw(g)
        y = np.zeros((x.shape[0], oh, ow, x.shape[3]), np.int8)
        assert self.lib.tck_pool_s8({"max": 0, "avg": 1}[kind], _ptr(g), act[0], act[1],
                                    _ptr(x), _ptr(y)) == 0
        return y

    def mean_s8(self, x, input_zp, output_zp, mult, shift, act=(-128, 127)):
        """Mean over the spatial axes of x [batch, h, w, c] or [batch, t, c] -> [batch, c]."""
        x = np.ascontiguousarray(x, np.int8)
        h, w = (x.shape[1], x.shape[2]) if x.ndim == 4 else (1, x.shape[1])
        g = np.array([x.shape[0], h, w, x.shape[-1]], np.int32)
        y = np.zeros((x.shape[0], x.shape[-1]), np.int8)
        qp = self._qp(input_zp, output_zp, act[0], act[1], False)
        m, s = np.array([mult], np.int32), np.array([shift], np.int32)
        self.lib.tck_mean_s8(_ptr(g), _ptr(qp), _ptr(m), _ptr(s), _ptr(x), _ptr(y))
        return y

    def mean_s8_count_multiplier(self, mult: int, shift: int, count: int) -> tuple[int, int]:
        out = np.zeros(2, np.int32)
        self.lib.tck_mean_s8_count_multiplier(mult, shift, count, _ptr(out))
        return int(out[0]), int(out[1])

    def quantize_s8(self, x, scale, zp):
        x = _f32(x)
        q = np.zeros(x.shape, np.int8)
        self.lib.tck_quantize_s8(_ptr(x), _ptr(q), x.size, scale, zp)
        return q

    def dequantize_s8(self, q, scale, zp):
        q = np.ascontiguousarray(q, np.int8)
        x = np.zeros(q.shape, np.float32)
        self.lib.tck_dequantize_s8(_ptr(q), _ptr(x), q.size, scale, zp)
        return x

    def quantize_multiplier(self, real: float) -> tuple[int, int]:
        m = np.zeros(1, np.int32)
        s = np.zeros(1, np.int32)
        self.lib.tck_quantize_multiplier(float(real), _ptr(m), _ptr(s))
        return int(m[0]), int(s[0])

    def multiply_by_quantized_multiplier(self, x: int, mult: int, shift: int) -> int:
        return int(self.lib.tck_multiply_by_quantized_multiplier(x, mult, shift))

    def multiply_by_quantized_multiplier_single(self, x: int, mult: int, shift: int) -> int:
        """The one-rounding requantisation of LiteRT's reference FULLY_CONNECTED."""
        return int(self.lib.tck_multiply_by_quantized_multiplier_single(x, mult, shift))

    def fully_connected_requant(self, x: int, mult: int, shift: int) -> int:
        """What the fully connected kernel makes of one accumulator (short or general path)."""
        return int(self.lib.tck_fully_connected_requant(x, mult, shift))

    def requant_channel_apply(self, x: int, mult: int, shift: int) -> int:
        """The precomputed-per-channel requantisation the convolution uses."""
        return int(self.lib.tck_requant_channel_apply(x, mult, shift))


@functools.lru_cache(maxsize=1)
def kernels() -> Kernels:
    return Kernels(build_library())
