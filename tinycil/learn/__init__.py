"""The learning method, on the host: everything that decides what the model learns.

Holds the class-incremental scenario (tasks), the model families and their size adaption (models,
sizing), training and metrics, dataset distillation (distill), int8 quantisation of models and
buffers (quantize), the host study with its baselines (experiment), the preparation of a device run
(prepare), the float32 simulation of the device procedure (simulate) and the PRNG it shares with
the firmware (prng).

May import: tinycil.datasets and the shared top-level modules (protocol_spec, runfolder).
Never imports deploy, link, report or cli.
"""
