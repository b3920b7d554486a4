"""Where an installed tinycil keeps its firmware project and its emulator's state.

A checkout builds in its own ``firmware/`` folder. A tinycil installed from a wheel carries the
firmware project, its local dev-platform and the board manifests as package data
(``tinycil/_project/``, put there by setup.py), but never builds inside site-packages: PlatformIO
writes absolute paths into ``.pio`` and the export writes the model into ``firmware/generated``,
and site-packages may be read-only or shared by several users. So the packaged project is copied
into a per-user work folder and built there; the copy is refreshed when the installed tinycil
brings different files, keeping the build cache and the exported model.

The folders follow each system's convention (XDG on Linux); environment variables override them:
``TINYCIL_WORK_DIR`` for the project copy, ``TINYCIL_STATE_DIR`` for the emulator's state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

WORK_DIR_ENV = "TINYCIL_WORK_DIR"
STATE_DIR_ENV = "TINYCIL_STATE_DIR"
PACKAGED = Path(__file__).resolve().parent.parent / "_project"
# Written by setup.py into the packaged project: {relative path: sha256} of every shipped file.
FILE_LIST = "files.json"
# Written into the work copy after a complete sync: the file list it was synced from.
STAMP = ".tinycil-files.json"
# The parts of the project that ship: the firmware project, the board catalogue and the example
# projects (which find the firmware's libraries and platform beside them, as in a checkout).
SHIPPED_DIRS = ("boards", "firmware", "examples")
# Never shipped, and kept in the work copy when it is refreshed: PlatformIO's build output, the
# exported model.
KEEP_DIRS = (".pio", "__pycache__")
KEEP_NAMES = ("model_data.h", "model_data.cpp")


class WorkspaceError(RuntimeError):
    pass


def _user_dir(kind: str) -> Path:
    """The per-user folder of `kind` ("data" or "state") for tinycil, by the system's convention."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
        return base / "tinycil" / kind
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "tinycil" / kind
    xdg = {"data": ("XDG_DATA_HOME", ".local/share"), "state": ("XDG_STATE_HOME", ".local/state")}
    env, default = xdg[kind]
    base = os.environ.get(env)
    return Path(base if base and os.path.isabs(base) else home / default) / "tinycil"


def state_dir() -> Path:
    """The emulator's state folder: the same from every directory, so `tinycil stop` or `info`
    run anywhere find the emulator `flash` started."""
    override = os.environ.get(STATE_DIR_ENV)
    return Path(override).expanduser() if override else _user_dir("state")


def work_dir() -> Path:
    """The per-user copy of the packaged project (boards/ and firmware/)."""
    override = os.environ.get(WORK_DIR_ENV)
    return Path(override).expanduser() if override else _user_dir("data") / "project"


def is_kept(rel: Path) -> bool:
    """Whether a path (relative to the project) is the user's build output or exported model."""
    return rel.name in KEEP_NAMES or any(part in KEEP_DIRS for part in rel.parts)


def shipped_files(root: Path) -> dict[str, str]:
    """{relative path: sha256} of the files of `root` that make up the project (what ships)."""
    found = {}
    for top in SHIPPED_DIRS:
        if not (root / top).is_dir():
            continue
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not is_kept(rel):
                found[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def packaged_files() -> dict[str, str] | None:
    """The packaged project's file list, or None when this tinycil carries no project."""
    listing = PACKAGED / FILE_LIST
    if not listing.is_file():
        return None
    try:
        return json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkspaceError(f"the installed tinycil is damaged ({listing}: {exc}): reinstall it") from exc


def _copy(src: Path, dst: Path) -> None:
    # Through a temporary name: two tinycil commands syncing at once never see half a file.
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def sync(files: dict[str, str], source: Path, target: Path) -> bool:
    """Make `target` hold exactly the project files of `source` (listed in `files`), keeping the
    build output and the exported model. Returns whether anything had to be done."""
    stamp = target / STAMP
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) == files:
            return False
    except (OSError, ValueError):
        pass
    for rel, digest in files.items():
        dst = target / rel
        if dst.is_file() and hashlib.sha256(dst.read_bytes()).hexdigest() == digest:
            continue
        src = source / rel
        if not src.is_file():
            raise WorkspaceError(f"the installed tinycil is damaged ({src} is missing): reinstall it")
        _copy(src, dst)
    # Files an older tinycil shipped would be compiled with the new ones: remove them.
    wanted = set(files)
    for top in SHIPPED_DIRS:
        if not (target / top).is_dir():
            continue
        for path in sorted((target / top).rglob("*"), reverse=True):
            rel = path.relative_to(target)
            if is_kept(rel):
                continue
            if path.is_file() and rel.as_posix() not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    stamp.write_text(json.dumps(files, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    return True


def installed_project() -> Path | None:
    """The work copy of the packaged project, brought up to date; None if nothing is packaged."""
    files = packaged_files()
    if files is None:
        return None
    target = work_dir()
    try:
        sync(files, PACKAGED, target)
    except OSError as exc:
        raise WorkspaceError(f"cannot copy tinycil's firmware project into {target} ({exc}): set "
                             f"{WORK_DIR_ENV} to a folder you can write") from exc
    return target
