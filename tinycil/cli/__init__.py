"""The `tinycil` command line.

Each command group keeps its commands in its own module of this package (``cli/<group>.py``, a
``COMMANDS`` list) so that this file stays a table of contents. The command line is the top layer:
it may import every other part of tinycil, and nothing imports it. Heavy libraries (TensorFlow) are
imported inside commands, never at start-up, so that `tinycil --help` and the device commands
answer at once.
"""

from __future__ import annotations

import importlib
import os

import click

# TensorFlow's C++ start-up chatter (CPU feature notes) means nothing to a user of this tool.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tinycil import __version__

# Modules that contribute commands, in the order `--help` lists them.
_COMMAND_MODULES = ("tinycil.cli.device", "tinycil.cli.learn", "tinycil.cli.export", "tinycil.cli.stream",
                    "tinycil.cli.run", "tinycil.cli.model")


class _Group(click.Group):
    def list_commands(self, ctx):  # keep the order of registration, not alphabetical
        return list(self.commands)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tinycil")
def main():
    """Class-incremental learning on microcontrollers: prepare on the host, keep learning on the device."""


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # an area not present in this checkout
        if exc.name != _name:
            raise
        continue
    for _command in _module.COMMANDS:
        main.add_command(_command)
