"""The one place that turns expected errors into a one-line message and a non-zero exit code.

Every command is wrapped in `friendly`: a user mistake (a bad option value, a missing or damaged
file, a board that is not plugged in) or a device that refuses is reported as the error's own
message, which says what to do, never as a Python traceback. Errors that are not in the lists
below are bugs of tinycil and keep their traceback, so they can be reported and fixed.
"""

from __future__ import annotations

import functools
import json
import zipfile

import click

# Exit code of an interrupted command (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def expected_errors() -> tuple[type[BaseException], ...]:
    """Error classes whose message is meant for the user. Imported here, not at start-up, so
    that `tinycil --help` stays fast."""
    from tinycil.datasets import DatasetError
    from tinycil.deploy.boards import BoardError
    from tinycil.deploy.build import BuildError
    from tinycil.deploy.emulator import EmulatorError
    from tinycil.deploy.export import ExportError
    from tinycil.deploy.flash import FlashError
    from tinycil.deploy.memplan import MemoryPlanError
    from tinycil.deploy.twin import TwinError
    from tinycil.learn.distill import DistillError
    from tinycil.learn.models import ModelError
    from tinycil.learn.prepare import PrepareError
    from tinycil.learn.quantize import QuantizeError
    from tinycil.learn.simulate import SimulationError
    from tinycil.learn.tasks import TaskSplitError
    from tinycil.link.bridge import DeviceError
    from tinycil.link.protocol import ProtocolError
    from tinycil.runfolder import RunFolderError

    errors = (DatasetError, BoardError, BuildError, EmulatorError, ExportError, FlashError,
              MemoryPlanError, TwinError, DistillError, ModelError, PrepareError, QuantizeError,
              SimulationError, TaskSplitError, DeviceError, ProtocolError, RunFolderError)
    try:  # the work folder of an installed tinycil (present in newer checkouts)
        from tinycil.deploy.workspace import WorkspaceError
    except ImportError:
        return errors
    return errors + (WorkspaceError,)


class Interrupted(click.ClickException):
    """Ctrl-C: the message says what state things were left in and how to go on."""

    exit_code = EXIT_INTERRUPTED


def friendly(func=None, *, interrupted=None, also: tuple = ()):
    """Decorator for a click command. `interrupted(exc) -> str`, when given, says after Ctrl-C
    what the command left behind and how to continue; otherwise a plain "interrupted". `also`:
    further error classes whose message is meant for the user (the learning commands' settings
    checks raise ValueError)."""
    if func is None:
        return lambda f: friendly(f, interrupted=interrupted, also=also)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt as exc:
            message = interrupted(exc) if interrupted is not None else None
            raise Interrupted(message or "interrupted") from None
        except expected_errors() + tuple(also) as exc:
            if getattr(exc, "interrupted", False):  # Ctrl-C, explained by the layer it hit
                raise Interrupted(one_line(exc)) from None
            raise click.ClickException(one_line(exc)) from None
        except (json.JSONDecodeError, zipfile.BadZipFile, EOFError) as exc:
            raise click.ClickException(f"a file is damaged ({exc}): re-create it (run `tinycil "
                                       "prepare` again for a run folder)") from None
        except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                PermissionError) as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
    return wrapper


def check_output_folder(path, option: str = "--output") -> None:
    """Refuse, before any work, an output folder that is an existing file."""
    from pathlib import Path

    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise click.BadParameter(f"{path} is a file, not a folder", param_hint=option)


def one_line(exc: BaseException) -> str:
    """The error's message; a multi-line message keeps its lines (they are the advice)."""
    text = str(exc).strip()
    return text or type(exc).__name__
