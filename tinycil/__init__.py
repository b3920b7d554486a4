"""tinycil: class-incremental learning on microcontrollers."""

__version__ = "0.1.0"
