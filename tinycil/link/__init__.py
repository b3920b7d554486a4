"""The serial link to a device: the bytes on the wire and the conversations they carry.

Holds the frame format (protocol: COBS, CRC, headers), the reliable windowed transport over any
pyserial port (bridge), the typed requests and replies of a device session (session), the streaming
of a task to the device (stream) and a fault-injecting proxy for tests and benchmarks (faultproxy).

May import: tinycil.learn, tinycil.datasets and the shared top-level modules. Never imports deploy,
report or cli.
"""
