"""Import TensorFlow without its start-up chatter on the terminal.

TensorFlow 2.21 writes two lines per library it loads before its logging is set up ("WARNING: All
log messages before absl::InitializeLog() ..." and an info line about oneDNN), whatever
TF_CPP_MIN_LOG_LEVEL says. They come from C++ straight to file descriptor 2, so Python's
sys.stderr cannot filter them: the import runs with descriptor 2 sent to a temporary file, and
everything else it wrote (a real warning, or the reason the import failed) is passed on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

# Info-level lines of Abseil's log format (I + month and day, time, thread, file:line]) and the
# notice that precedes them. Warnings and errors (W, E, F) are kept.
_CHATTER = (re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
            re.compile(r"^I\d{4} [\d:.]+\s+\d+ [\w.+-]+:\d+\] "))


def is_chatter(line: str) -> bool:
    return any(p.match(line) for p in _CHATTER)


def import_tensorflow() -> None:
    """Import tensorflow and keras, dropping the start-up chatter (see the module doc), and keep
    TensorFlow's Python logger to errors."""
    if "tensorflow" not in sys.modules:
        _import_quietly()
    # Its Python warnings too: "N out of the last M calls ... triggered tf.function retracing" is
    # what a new model after every growth does by design (learn/train.py traces one per model).
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


def _import_quietly() -> None:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (loads tensorflow, its backend)
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.write("".join(l for l in text.splitlines(keepends=True) if not is_chatter(l)))
            sys.stderr.flush()
