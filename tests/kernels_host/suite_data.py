"""Inputs and host-computed expected outputs of the on-target kernel suite, as C source."""

from __future__ import annotations

import numpy as np

from .host_lib import PADDING, Kernels

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.int8): "int8_t",
           np.dtype(np.int32): "int32_t", np.dtype(np.uint8): "uint8_t"}


def _literal(a: np.ndarray) -> str:
    if a.dtype == np.float32:
        # Hexadecimal float literals: exact, no decimal rounding question.
        items = [f"{float(v).hex()}f" if np.isfinite(v) else
                 "NAN" if np.isnan(v) else ("-INFINITY" if v < 0 else "INFINITY")
                 for v in a.ravel().tolist()]
    else:
        items = [str(int(v)) for v in a.ravel().tolist()]
    return "{" + ", ".join(items) + "}"


class SuiteWriter:
    def __init__(self):
        self.decls: list[str] = []
        self.body: list[str] = []
        self.n = 0
        self.names: list[str] = []

    def const(self, a: np.ndarray) -> str:
        a = np.ascontiguousarray(a)
        name = f"in{len(self.decls)}"
        self.decls.append(f"const {C_TYPES[a.dtype]} {name}[] = {_literal(a)};")
        return name

    def case(self, title: str, call: str, outputs: dict[str, np.ndarray]):
        """`call` names the outputs as {key} (zero-filled buffers); {{ and }} are literal braces."""
        names = {}
        for key, want in outputs.items():
            want = np.ascontiguousarray(want)
            buf = f"out{self.n}_{key}"
            names[key] = buf
            ctype = C_TYPES[want.dtype]
            self.decls.append(f"{ctype} {buf}[{max(want.size, 1)}];")
            self.decls.append(f"const {ctype} {buf}_want[] = {_literal(want)};")
        for key, buf in names.items():
            call = call.replace("{" + key + "}", buf)
        self.body.append("    " + call.replace("{{", "{").replace("}}", "}"))
        for key, want in outputs.items():
            label = f"{title} {key}"
            self.names.append(label)
            self.body.append(f'    check("{label}", {names[key]}, {names[key]}_want, '
                             f"sizeof {names[key]}_want);")
        self.n += 1

    def source(self) -> str:
        return "\n".join(self.decls) + "\n\nvoid run_cases() {\n" + "\n".join(self.body) + "\n}\n"


def _dims(g: np.ndarray) -> str:
    b, h, w, c, oc, kh, kw, sh, sw, pad, m = (int(v) for v in g)
    padding = "TC_PADDING_SAME" if pad == PADDING["same"] else "TC_PADDING_VALID"
    return (f"tc_window_dims d; tc_window_dims_init(&d, {b}, {h}, {w}, {c}, {oc}, {kh}, {kw}, "
            f"{sh}, {sw}, {padding}, {m});")


def build_suite(k: Kernels, seed: int = 1) -> SuiteWriter:
    rng = np.random.default_rng(seed)
    s = SuiteWriter()
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731

    # Dense: sizes that hit the 4-row x 8-column blocks and every remainder path.
    for b, n_in, n_out in [(1, 19, 6), (2, 32, 8), (1, 1, 3)]:
        x, w, bias, dy = f32(b, n_in), f32(n_out, n_in), f32(n_out), f32(b, n_out)
        X, W, B, DY = s.const(x), s.const(w), s.const(bias), s.const(dy)
        dd = f"const tc_dense_dims dd = {{{b}, {n_in}, {n_out}}};"
        s.case(f"dense_f32_fwd {b}x{n_in}x{n_out}",
               f"{{ {dd} tc_dense_f32_fwd(&dd, {X}, {W}, {B}, {{y}}); }}",
               {"y": k.dense_f32_fwd(x, w, bias)})
        dx, dw, db = k.dense_f32_bwd(x, w, dy)
        s.case(f"dense_f32_bwd {b}x{n_in}x{n_out}",
               f"{{ {dd} tc_dense_f32_bwd(&dd, {X}, {W}, {DY}, {{dx}}, {{dw}}, {{db}}); }}",
               {"dx": dx, "dw": dw, "db": db})

    # conv2d float, forward and backward
    for b, h, w_, ci, co, ks, st, pad in [(1, 7, 6, 3, 5, 3, 1, "same"),
                                          (2, 6, 5, 1, 6, 3, 1, "same"),  # one channel, 3x3
                                          (1, 7, 8, 1, 5, 3, 2, "valid"),
                                          (1, 8, 8, 8, 8, 3, 2, "same"),
                                          (1, 9, 9, 2, 4, 5, 1, "valid")]:
        x, wt, bias = f32(b, h, w_, ci), f32(co, ks, ks, ci), f32(co)
        y = k.conv2d_f32_fwd(x, wt, bias, st, pad)
        dy = f32(*y.shape)
        g = Kernels.geometry(x.shape, co, ks, st, pad)
        X, W, B, DY = s.const(x), s.const(wt), s.const(bias), s.const(dy)
        s.case(f"conv2d_f32_fwd {case_id(g)}",
               f"{{ {_dims(g)} tc_conv2d_f32_fwd(&d, {X}, {W}, {B}, {{y}}); }}", {"y": y})
        dx, dw, db = k.conv2d_f32_bwd(x, wt, dy, st, pad)
        s.case(f"conv2d_f32_bwd {case_id(g)}",
               f"{{ {_dims(g)} tc_conv2d_f32_bwd(&d, {X}, {W}, {DY}, {{dx}}, {{dw}}, {{db}}); }}",
               {"dx": dx, "dw": dw, "db": db})
        if ci == 1:  # a first layer: no input gradient (its own filter-by-filter path)
            _, dw, db = k.conv2d_f32_bwd(x, wt, dy, st, pad, need_dx=False)
            s.case(f"conv2d_f32_bwd first layer {case_id(g)}",
                   f"{{ {_dims(g)} tc_conv2d_f32_bwd(&d, {X}, {W}, {DY}, nullptr, {{dw}}, {{db}}); }}",
                   {"dw": dw, "db": db})

    # depthwise float
    x, wt, bias = f32(1, 7, 7, 5), f32(3, 3, 10), f32(10)
    y = k.depthwise_f32_fwd(x, wt, bias, 2, "same", 2)
    dy = f32(*y.shape)
    g = Kernels.geometry(x.shape, 10, 3, 2, "same", 2)
    X, W, B, DY = s.const(x), s.const(wt), s.const(bias), s.const(dy)
    s.case("depthwise_f32_fwd", f"{{ {_dims(g)} tc_depthwise_conv2d_f32_fwd(&d, {X}, {W}, {B}, "
           "{y}); }", {"y": y})
    dx, dw, db = k.depthwise_f32_bwd(x, wt, dy, 2, "same", 2)
    s.case("depthwise_f32_bwd", f"{{ {_dims(g)} tc_depthwise_conv2d_f32_bwd(&d, {X}, {W}, {DY}, "
           "{dx}, {dw}, {db}); }", {"dx": dx, "dw": dw, "db": db})

    # pooling float
    x = f32(1, 7, 9, 3)
    X = s.const(x)
    for kind, fn in [("max", "max"), ("avg", "avg")]:
        y = k.pool_f32_fwd(kind, x, 3, 2, "same")
        dy = f32(*y.shape)
        g = Kernels.geometry(x.shape, 3, 3, 2, "same")
        DY = s.const(dy)
        s.case(f"{kind}_pool_f32_fwd", f"{{ {_dims(g)} tc_{fn}_pool_f32_fwd(&d, {X}, {{y}}); }}",
               {"y": y})
        dx = k.pool_f32_bwd(kind, x, dy, 3, 2, "same")
        args = f"{X}, {DY}" if kind == "max" else DY
        s.case(f"{kind}_pool_f32_bwd",
               f"{{ {_dims(g)} tc_{fn}_pool_f32_bwd(&d, {args}, {{dx}}); }}", {"dx": dx})

    # max pooling 2x2, stride 2 (its own path), with ties
    x = np.random.default_rng(3).integers(0, 3, (2, 6, 6, 5)).astype(np.float32)
    y = k.pool_f32_fwd("max", x, 2, 2, "valid")
    dy = f32(*y.shape)
    g = Kernels.geometry(x.shape, 5, 2, 2, "valid")
    X, DY = s.const(x), s.const(dy)
    s.case("max_pool_f32_fwd 2x2", f"{{ {_dims(g)} tc_max_pool_f32_fwd(&d, {X}, {{y}}); }}", {"y": y})
    s.case("max_pool_f32_bwd 2x2", f"{{ {_dims(g)} tc_max_pool_f32_bwd(&d, {X}, {DY}, {{dx}}); }}",
           {"dx": k.pool_f32_bwd("max", x, dy, 2, 2, "valid")})

    # ReLU, softmax cross-entropy, exp/log, SGD, clipping
    x, dy = f32(40) * 4, f32(40)
    X, DY = s.const(x), s.const(dy)
    s.case("relu6_f32", f"{{ tc_relu6_f32_fwd({X}, {{y}}, 40); tc_relu6_f32_bwd({X}, {DY}, "
           "{dx}, 40); }", {"y": k.relu_f32(x, six=True), "dx": k.relu_f32(x, dy, six=True)})
    logits = f32(3, 10) * 3
    labels = np.array([0, 4, 2], np.int32)
    mask = np.array([1, 1, 1, 0, 1, 0, 0, 1, 0, 0], np.uint8)
    loss, dz = k.softmax_ce_f32(logits, labels, mask=mask)
    L, LB, M = s.const(logits), s.const(labels), s.const(mask)
    s.case("softmax_ce_f32", f"{{ {{loss}}[0] = tc_softmax_ce_f32({L}, {LB}, 3, 10, {M}, 0, "
           "{dz}); }", {"loss": np.array([loss], np.float32), "dz": dz})
    e = np.linspace(-90, 30, 61).astype(np.float32)
    E = s.const(e)
    p = np.exp(np.linspace(-60, 60, 61)).astype(np.float32)
    P = s.const(p)
    s.case("expf_logf", f"for (int i = 0; i < 61; ++i) {{{{ {{ex}}[i] = tc_expf({E}[i]); "
           f"{{lg}}[i] = tc_logf({P}[i]); }}}}", {"ex": k.expf(e), "lg": k.logf(p)})
    w, v, gr = f32(50), f32(50), f32(50)
    w2, v2 = k.sgd_momentum_f32(w, v, gr, 0.05, 0.9)
    W, V, G = s.const(w), s.const(v), s.const(gr)
    s.case("sgd_momentum_f32", f"{{ memcpy({{w}}, {W}, sizeof {W}); memcpy({{v}}, {V}, sizeof {V});"
           f" tc_sgd_momentum_f32({{w}}, {{v}}, {G}, 50, 0.05f, 0.9f); }}", {"w": w2, "v": v2})
    g1, g2 = f32(30) * 2, f32(7) * 2
    norm, (c1, c2) = k.clip_grad_global_norm_f32([g1, g2], 1.5)
    G1, G2 = s.const(g1), s.const(g2)
    s.case("clip_grad_global_norm_f32",
           f"{{ memcpy({{g1}}, {G1}, sizeof {G1}); memcpy({{g2}}, {G2}, sizeof {G2}); "
           f"float* gs[2] = {{{{{{g1}}, {{g2}}}}}}; const int32_t ns[2] = {{{{30, 7}}}}; "
           f"{{norm}}[0] = tc_clip_grad_global_norm_f32(gs, ns, 2, 1.5f); }}",
           {"g1": c1, "g2": c2, "norm": np.array([norm], np.float32)})

    # The training loop's kernels: every blocked path and its remainders (8, 4 and 1 columns,
    # 4-row blocks and rows left over), against the host build's bits.
    for n_el, scale in [(50, 1.0), (61, 0.5)]:
        w, v, gr = f32(n_el), f32(n_el), f32(n_el)
        w2, v2 = k.sgd_momentum_fma_f32(w, v, gr, 0.05, 0.9, scale)
        W, V, G = s.const(w), s.const(v), s.const(gr)
        s.case(f"sgd_momentum_fma_f32 {n_el} {scale}",
               f"{{ memcpy({{w}}, {W}, sizeof {W}); memcpy({{v}}, {V}, sizeof {V});"
               f" tc_sgd_momentum_fma_f32({{w}}, {{v}}, {G}, {n_el}, 0.05f, 0.9f, {scale}f); }}",
               {"w": w2, "v": v2})
    for rows, cols, scale in [(6, 44, 1.0), (5, 19, 0.5), (4, 196, 0.75)]:
        w, v, dyv, xv = f32(rows, cols), f32(rows, cols), f32(rows), f32(cols)
        w2, v2 = k.sgd_momentum_outer_f32(w, v, dyv, xv, 0.05, 0.9, scale)
        W, V, DYV, XV = s.const(w), s.const(v), s.const(dyv), s.const(xv)
        s.case(f"sgd_momentum_outer_f32 {rows}x{cols} {scale}",
               f"{{ memcpy({{w}}, {W}, sizeof {W}); memcpy({{v}}, {V}, sizeof {V});"
               f" tc_sgd_momentum_outer_f32({{w}}, {{v}}, {rows}, {cols}, {DYV}, {XV}, 0.05f, "
               f"0.9f, {scale}f); }}", {"w": w2, "v": v2})
    p37 = f32(37)
    P37 = s.const(p37)
    s.case("f32_sum_squares", f"{{ {{acc}}[0] = tc_f32_sum_squares({P37}, 37, 0.5f); }}",
           {"acc": np.array([k.sum_squares_f32(p37, 0.5)], np.float32)})
    x, w, dy = f32(2, 45), f32(6, 45), f32(2, 6)
    gw0, gb0 = f32(6, 45), f32(6)
    dx, gw, gb = k.dense_f32_bwd_acc(x, w, dy, gw0, gb0, accumulate=True)
    X, W, DY, GW0, GB0 = s.const(x), s.const(w), s.const(dy), s.const(gw0), s.const(gb0)
    s.case("dense_f32_bwd_acc", f"{{ const tc_dense_dims dd = {{{{2, 45, 6}}}}; "
           f"memcpy({{dw}}, {GW0}, sizeof {GW0}); memcpy({{db}}, {GB0}, sizeof {GB0}); "
           f"tc_dense_f32_bwd_acc(&dd, {X}, {W}, {DY}, {{dx}}, {{dw}}, {{db}}, 1); }}",
           {"dx": dx, "dw": gw, "db": gb})
    z = f32(10) * 3
    Z = s.const(z)
    row_loss, row_dz = k.softmax_ce_row_f32(z, 3, 0.25, num_valid=7)
    s.case("softmax_ce_row_f32", f"{{ {{loss}}[0] = tc_softmax_ce_row_f32({Z}, 3, 10, nullptr, "
           "7, 0.25f, {dz}); }", {"loss": np.array([row_loss], np.float32), "dz": row_dz})
    xr = f32(43)
    xr[5] = np.nan
    dyr = f32(43)
    XR, DYR = s.const(xr), s.const(dyr)
    s.case("relu_f32", f"{{ tc_relu_f32_fwd({XR}, {{y}}, 43); tc_relu_f32_bwd({XR}, {DYR}, "
           "{dx}, 43); }", {"y": k.relu_f32(xr), "dx": k.relu_f32(xr, dyr)})

    # int8: conv2d (several channel blocks, odd taps), depthwise, fully connected, pooling
    def quant(n, real_lo=0.0005, real_hi=0.004):
        ms, ss = zip(*[k.quantize_multiplier(r) for r in rng.uniform(real_lo, real_hi, n)])
        return np.array(ms, np.int32), np.array(ss, np.int32)

    s8 = lambda *shape: rng.integers(-128, 128, shape).astype(np.int8)  # noqa: E731
    for b, h, w_, ci, co, ks, st, pad, block in [(1, 14, 14, 1, 5, 3, 1, "same", 5),
                                                 (2, 6, 9, 1, 3, 3, 1, "valid", 4),
                                                 (1, 7, 7, 3, 5, 3, 1, "same", 2),
                                                 (2, 8, 8, 16, 12, 3, 2, "same", 64),
                                                 (1, 9, 9, 5, 8, 5, 1, "valid", 4),
                                                 (1, 8, 7, 8, 6, 3, 1, "same", 0)]:
        x, wt = s8(b, h, w_, ci), s8(co, ks, ks, ci)
        bias = rng.integers(-3000, 3000, co).astype(np.int32)
        ms, ss = quant(co)
        y = k.conv2d_s8(x, wt, bias, st, pad, -3, 5, ms, ss, (-128, 127), out_block=block)
        g = Kernels.geometry(x.shape, co, ks, st, pad)
        X, W, B, MS, SS = s.const(x), s.const(wt), s.const(bias), s.const(ms), s.const(ss)
        # block 0: the least scratch the kernel accepts (its two-pixel layout)
        scratch_words = 1 + (3 + max(block, 2)) * ((ks * ks * ci + 3) // 4 * 4) // 2
        bytes_expr = ("tc_conv2d_s8_min_scratch_bytes(&d)" if block == 0
                      else f"tc_conv2d_s8_scratch_bytes(&d, {block})")
        s.decls.append(f"int32_t scratch{s.n}[{scratch_words}];")
        s.case(f"conv2d_s8 {case_id(g)}",
               f"{{ {_dims(g)} const tc_s8_quant q = {{3, 5, -128, 127, {MS}, {SS}, 1}}; "
               f"if (!tc_conv2d_s8(&d, &q, {X}, {W}, {B}, {{y}}, scratch{s.n}, "
               f"{bytes_expr})) {{y}}[0] ^= 1; }}", {"y": y})
    # The first-layer path with a lower bound above -128 (its clamping loop).
    x, wt = s8(1, 5, 8, 1), s8(4, 3, 3, 1)
    bias = rng.integers(-3000, 3000, 4).astype(np.int32)
    ms, ss = quant(4)
    y = k.conv2d_s8(x, wt, bias, 1, "same", -3, 5, ms, ss, (5, 127), out_block=4)
    g = Kernels.geometry(x.shape, 4, 3, 1, "same")
    X, W, B, MS, SS = s.const(x), s.const(wt), s.const(bias), s.const(ms), s.const(ss)
    s.decls.append(f"int32_t scratch{s.n}[64];")
    s.case("conv2d_s8 first layer relu",
           f"{{ {_dims(g)} const tc_s8_quant q = {{3, 5, 5, 127, {MS}, {SS}, 1}}; "
           f"if (!tc_conv2d_s8(&d, &q, {X}, {W}, {B}, {{y}}, scratch{s.n}, "
           f"tc_conv2d_s8_scratch_bytes(&d, 4))) {{y}}[0] ^= 1; }}", {"y": y})
    x, wt = s8(1, 8, 8, 6), s8(3, 3, 6)
    bias = rng.integers(-3000, 3000, 6).astype(np.int32)
    ms, ss = quant(6, 0.002, 0.01)
    y = k.depthwise_s8(x, wt, bias, 1, "same", 1, 2, -1, ms, ss, (-1, 127))
    g = Kernels.geometry(x.shape, 6, 3, 1, "same")
    X, W, B, MS, SS = s.const(x), s.const(wt), s.const(bias), s.const(ms), s.const(ss)
    s.decls.append("int32_t dw_acc[6];")
    s.case("depthwise_s8", f"{{ {_dims(g)} const tc_s8_quant q = {{-2, -1, -1, 127, {MS}, {SS}, "
           f"1}}; tc_depthwise_conv2d_s8(&d, &q, {X}, {W}, {B}, {{y}}, dw_acc); }}", {"y": y})
    x, wt = s8(2, 37), s8(9, 37)
    bias = rng.integers(-3000, 3000, 9).astype(np.int32)
    ms, ss = quant(1)
    y = k.fully_connected_s8(x, wt, bias, 7, 0, ms, ss)
    X, W, B, MS, SS = s.const(x), s.const(wt), s.const(bias), s.const(ms), s.const(ss)
    s.case("fully_connected_s8", f"{{ const tc_dense_dims dd = {{2, 37, 9}}; const tc_s8_quant "
           f"q = {{-7, 0, -128, 127, {MS}, {SS}, 0}}; tc_fully_connected_s8(&dd, &q, {X}, {W}, "
           f"{B}, {{y}}); }}", {"y": y})
    # Inputs over one widened chunk (256): the chunked path with its accumulator group.
    x, wt = s8(1, 301), s8(5, 301)
    bias = rng.integers(-3000, 3000, 5).astype(np.int32)
    ms, ss = quant(5, 0.0002, 0.001)
    y = k.fully_connected_s8(x, wt, bias, -3, 4, ms, ss, (4, 127))
    X, W, B, MS, SS = s.const(x), s.const(wt), s.const(bias), s.const(ms), s.const(ss)
    s.case("fully_connected_s8 chunks", f"{{ const tc_dense_dims dd = {{1, 301, 5}}; const "
           f"tc_s8_quant q = {{3, 4, 4, 127, {MS}, {SS}, 1}}; tc_fully_connected_s8(&dd, &q, "
           f"{X}, {W}, {B}, {{y}}); }}", {"y": y})
    # Multipliers of exact powers of two (2^30 with right shifts of 1 to 4: acc / 2^2 .. 2^5) put
    # one accumulator in 4 to 32 on a half-way case, of both signs, and no activation clamps
    # them: the Cortex-M7's SMMLA path of the one-rounding requantisation on its ties.
    # Small inputs and weights keep most outputs inside the int8 range.
    x = rng.integers(-10, 10, (8, 24)).astype(np.int8)
    wt = rng.integers(-8, 9, (16, 24)).astype(np.int8)
    bias = rng.integers(-50, 50, 16).astype(np.int32)
    ms = np.full(16, 1 << 30, np.int32)
    ss = -(1 + np.arange(16, dtype=np.int32) % 4)
    y = k.fully_connected_s8(x, wt, bias, 2, -1, ms, ss)
    X, W, B, MS, SS = s.const(x), s.const(wt), s.const(bias), s.const(ms), s.const(ss)
    s.case("fully_connected_s8 ties", f"{{ const tc_dense_dims dd = {{8, 24, 16}}; const "
           f"tc_s8_quant q = {{-2, -1, -128, 127, {MS}, {SS}, 1}}; tc_fully_connected_s8(&dd, &q, "
           f"{X}, {W}, {B}, {{y}}); }}", {"y": y})
    x = s8(1, 7, 9, 4)
    X = s.const(x)
    g = Kernels.geometry(x.shape, 4, 3, 2, "same")
    for kind in ("max", "avg"):
        s.case(f"{kind}_pool_s8", f"{{ {_dims(g)} tc_{kind}_pool_s8(&d, -100, 100, {X}, {{y}}); }}",
               {"y": k.pool_s8(kind, x, 3, 2, "same", (-100, 100))})
    # Global average pooling over 5x7 pixels with an odd channel count (the 4-channel blocks and
    # the remainder), and over a 1-D signal; multipliers below and above 1.
    for shape, (mult, shift), zps in (((2, 5, 7, 11), (1518500250, -1), (-3, 9)),
                                     ((1, 1, 50, 16), (1431655765, 2), (-128, -128))):
        x = s8(*shape)
        X = s.const(x)
        y = k.mean_s8(x, zps[0], zps[1], mult, shift)
        s.case(f"mean_s8 {'x'.join(map(str, shape))}",
               f"{{ const tc_mean_dims md = {{{', '.join(map(str, shape))}}}; const int32_t "
               f"mm = {mult}, ms = {shift}; const tc_s8_quant q = {{{-zps[0]}, {zps[1]}, -128, "
               f"127, &mm, &ms, 0}}; tc_mean_s8(&md, &q, {X}, {{y}}); }}", {"y": y})
    xf = f32(33) * 3
    XF = s.const(xf)
    q = k.quantize_s8(xf, 0.05, -4)
    Q = s.const(q)
    s.case("quantize_dequantize_s8", f"{{ tc_quantize_s8({XF}, {{q}}, 33, 0.05f, -4); "
           f"tc_dequantize_s8({Q}, {{x}}, 33, 0.05f, -4); }}",
           {"q": q, "x": k.dequantize_s8(q, 0.05, -4)})
    # Every int8 value, from an odd address (the blocked loop's word loads are then unaligned),
    # with the zero point of a ReLU layer's outputs.
    every = np.arange(-128, 128).astype(np.int8)
    EVERY = s.const(every)
    s.case("dequantize_s8 every value, unaligned",
           f"{{ tc_dequantize_s8({EVERY} + 1, {{x}}, 255, 0.0371f, -128); }}",
           {"x": k.dequantize_s8(every[1:], np.float32(0.0371), -128)})
    return s


def case_id(g: np.ndarray) -> str:
    return "x".join(str(int(v)) for v in g[:9]) + ("s" if g[9] == PADDING["same"] else "v")
