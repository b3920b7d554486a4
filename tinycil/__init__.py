"""tinycil: class-incremental learning on microcontrollers.

The package is layered; each layer may import only the layers above it in this list:

    protocol_spec, runfolder   contracts shared by every part (and, for the spec, the firmware)
    software                   the versions a result was measured with, recorded beside it
    datasets/                  the data sets, behind one registry
    learn/                     the learning method on the host: tasks, models, sizing, training,
                               distillation, quantisation, study, prepare, simulation
    link/                      the serial link: frames, reliable transport, device session, stream
    deploy/                    from a run to a device: boards, export, memory plan, build, flash,
                               emulator, host twin
    report                     summaries of a finished run
    cli/                       the command line, one module per command group

tests/test_layout.py holds the package to this order.
"""

__version__ = "0.1.0"
