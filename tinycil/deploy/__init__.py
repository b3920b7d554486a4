"""Deployment: from a prepared run to a running device.

Holds the board catalogue (boards), the export of a run as C arrays (export) and its memory plan
(memplan), the offline PlatformIO build (build), flashing a real board (flash), the emulated board
under QEMU (emulator), the firmware's runtime built for the host as a twin (twin) and, for a
tinycil installed from a wheel, the per-user copy of the firmware project it ships (workspace),
and the check of a user's own Keras or .tflite model against the runtime (modelcheck).

May import: tinycil.learn, tinycil.link (flash checks the device answers), tinycil.datasets and the
shared top-level modules. Never imports report or cli.
"""
