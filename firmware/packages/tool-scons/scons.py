"""Runs SCons from the Python environment PlatformIO runs in (PyPI package `scons`).

PlatformIO Core starts its build engine as `python <tool-scons>/scons.py ...`; this launcher lets
the project build without downloading tool-scons from the PlatformIO registry.
"""
import sys

try:
    from SCons.Script.Main import main
except ImportError:
    sys.exit("SCons is not installed in this Python environment: run `pip install scons`.")

if __name__ == "__main__":
    main()
