"""TensorFlow's start-up chatter stays off the terminal; its real warnings and errors do not."""

from __future__ import annotations

import subprocess
import sys

from tinycil.cli.quiet import is_chatter


def test_only_the_info_lines_and_the_logging_notice_are_chatter():
    assert is_chatter("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    assert is_chatter("I0000 00:00:1796350119.371175    4568 port.cc:153] oneDNN custom operations are on.\n")
    # Warnings and errors of the same format, and anything else, reach the user.
    assert not is_chatter("W0000 00:00:1796350119.371175    4568 cpu_feature_guard.cc:210] something\n")
    assert not is_chatter("E0000 00:00:1796350119.371175    4568 cuda_dnn.cc:8310] Unable to register\n")
    assert not is_chatter("ImportError: libtensorflow_framework.so.2: cannot open shared object file\n")


def test_check_model_prints_its_report_without_tensorflow_chatter(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(3)])
    path = tmp_path / "small.keras"
    model.save(path)
    # A new process: TensorFlow prints its chatter once per process, when it is first imported.
    res = subprocess.run([sys.executable, "-c", "from tinycil.cli import main; main()", "check-model",
                          str(path)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "all run on the device" in res.stdout
    assert "absl::InitializeLog" not in res.stderr, res.stderr
    assert "oneDNN custom operations" not in res.stderr, res.stderr
