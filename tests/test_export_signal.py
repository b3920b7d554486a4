"""Export of the families whose backbone ends in global average pooling (int8 MEAN): a quick
basic-motions (cnn1d) run builds for the emulated board, and a DS-CNN backbone (keywords'
input) exports and runs in the host twin exactly as LiteRT runs it."""

from __future__ import annotations

import numpy as np
import pytest

from test_export_digits import build_with_runtime, exported_into
from test_runtime_twin import prepared_basic_motions_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def basic_motions_run(tmp_path_factory):
    return prepared_basic_motions_run(tmp_path_factory)


def test_cnn1d_export_builds_for_the_emulated_board(basic_motions_run, root, tmp_path):
    from tinycil.deploy.export import OP_MEAN, OP_RESHAPE, load_export_model

    em = load_export_model(basic_motions_run)
    ops = [e["op"] for e in em.table]
    assert ops[-1] == OP_MEAN and ops[0] == OP_RESHAPE
    mean = em.table[-1]
    assert mean["out"] == (1, 1, mean["in"][2]) and em.latent_size == mean["in"][2]
    with exported_into(basic_motions_run, root, "mps2_an500") as result:
        assert result.manifest["backbone_layers"][-1] == "MEAN"
        build_with_runtime(result, root, tmp_path, "mps2_an500")


def _dscnn_export_model(seed=0):
    """An ExportModel for a DS-CNN on keywords' MFCC maps (49 frames x 10 coefficients), straight
    from the model family and the quantiser; no training needed to check the arithmetic."""
    from tinycil.deploy.export import ExportModel, backbone_table
    from tinycil.learn.models import build_model, split_model
    from tinycil.learn.quantize import quantize_backbone

    shape = (49, 10, 1)
    model = build_model("dscnn", shape, 4, [8, 16, 16, 24], seed=seed)
    backbone, tail = split_model(model, 2)
    rng = np.random.default_rng(seed)
    rep = rng.normal(0.0, 1.0, (64, *shape)).astype(np.float32)
    q = quantize_backbone(backbone, rep)
    table = backbone_table(q.layers())
    dense = [layer for layer in tail.layers if type(layer).__name__ == "Dense"]
    weights = [np.ascontiguousarray(d.kernel.numpy().T, np.float32) for d in dense]
    biases = [np.asarray(d.bias.numpy(), np.float32) for d in dense]
    latent = int(np.prod(q.output_shape))
    plan = [{"classes_seen": 4, "out": [int(w.shape[0]) for w in weights]}]
    em = ExportModel(
        name="dscnn", input_shape=shape, input_scale=q.input_scale,
        input_zero_point=q.input_zero_point, table=table, latent_size=latent,
        latent_scale=q.output_scale, latent_zero_point=q.output_zero_point, tail_weights=weights,
        tail_biases=biases, tail_max=[(latent, int(weights[0].shape[0])),
                                      (int(weights[0].shape[0]), 4)],
        plan=plan, known_tasks=1, classes_max=4, buffer_x=np.zeros((0, int(np.prod(shape))), np.int8),
        buffer_y=np.zeros(0, np.uint8), buffer_ram_capacity=4,
        defaults={"lr": 0.05, "momentum": 0.9, "clip_norm": 5.0, "batch_new": 4,
                  "batch_replay": 4, "seed": 0})
    return em, q, rng


def test_dscnn_backbone_exports_and_equals_litert(tmp_path):
    from tinycil.deploy.boards import load_board
    from tinycil.deploy.export import OP_DEPTHWISE, OP_MEAN, export_model
    from tinycil.deploy.twin import Twin

    em, q, rng = _dscnn_export_model()
    ops = [e["op"] for e in em.table]
    assert ops[-1] == OP_MEAN and OP_DEPTHWISE in ops
    export_model(em, load_board("mps2_an500"), [tmp_path])
    x = rng.integers(-128, 128, (30, *em.input_shape)).astype(np.int8)
    got = Twin(model_dir=tmp_path).backbone(x)
    want = q.run(x).reshape(len(x), -1)
    assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} latent values differ"


def test_mean_keep_dims_over_an_image_is_refused():
    """LiteRT's optimised kernel for keep_dims MEAN over H and W is not its reference kernel:
    the exporter says what to change instead of exporting a model the device would not match."""
    from tinycil.deploy.export import ExportError, _mean_entry

    layer = {"input": {"shape": (1, 5, 5, 8), "scale": 0.1, "zero_point": 0},
             "output": {"shape": (1, 1, 1, 8), "scale": 0.05, "zero_point": 0},
             "options": {"keepDims": True}, "inputs": [None, {"data": np.array([1, 2])}]}
    entry = {"in": (5, 5, 8)}
    with pytest.raises(ExportError, match="keepdims=False"):
        _mean_entry(layer, entry)
    layer["options"]["keepDims"] = False
    layer["inputs"][1]["data"] = np.array([1])  # over H only: not global pooling
    with pytest.raises(ExportError, match="spatial axes"):
        _mean_entry(layer, entry)
