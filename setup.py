"""Packaging hook: the wheel also carries the firmware project and the board catalogue.

Everything else about the package is declared in pyproject.toml. A tinycil installed from a wheel
has no checkout around it, yet `tinycil build` needs the PlatformIO project (firmware/ with its
local dev-platform and packages) and the board manifests (boards/). This hook copies them into the
package as ``tinycil/_project/`` together with a list of the files and their hashes; at run time
tinycil.deploy.workspace copies them into a per-user work folder and builds there. Build output
(.pio) and an exported model (firmware/generated/model_data.*) never ship.
"""

import json
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "tinycil" / "deploy"))
import workspace  # noqa: E402  (the same rules decide what ships and what the work copy keeps)

sys.path.pop(0)


class BuildWithProject(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install finds the checkout itself
        files = workspace.shipped_files(HERE)
        if not files:
            raise SystemExit("boards/ and firmware/ are missing: build the package from a tinycil checkout")
        target = Path(self.build_lib) / "tinycil" / "_project"
        if target.exists():
            shutil.rmtree(target)
        for rel in files:
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / rel, dst)
        (target / workspace.FILE_LIST).write_text(json.dumps(files, indent=0, sort_keys=True) + "\n")


setup(cmdclass={"build_py": BuildWithProject})
