"""Deployment: from a prepared run to a running device.

Holds the board catalogue (boards), the export of a run as C arrays (export) and its memory plan
(memplan), the offline PlatformIO build (build), flashing a real board (flash), the emulated board
under QEMU (emulator) and the firmware's runtime built for the host as a twin (twin).

May import: tinycil.learn, tinycil.link (flash checks the device answers), tinycil.datasets and the
shared top-level modules. Never imports report or cli.
"""
