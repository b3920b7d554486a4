"""The board catalogue: one JSON manifest per board in the project's top-level ``boards/`` folder.

A manifest is an ordinary PlatformIO board definition (PlatformIO reads the same folder through
``boards_dir``) plus a ``tinycil`` object with what the host needs: serial defaults, the memory
budget, which counter the firmware reports and how to flash. Keeping both in one file means a
board is added in one place.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "TINYCIL_HOME"


class BoardError(ValueError):
    """A board id that is not in the catalogue, or a manifest that cannot be read."""


def _is_project(folder: Path) -> bool:
    return (folder / "boards").is_dir() and (folder / "firmware" / "platformio.ini").is_file()


def project_root() -> Path:
    """The project folder that holds ``boards/`` and ``firmware/``.

    ``TINYCIL_HOME`` wins (a second checkout, or your own copy of the firmware project); then the
    checkout this package runs from (an editable install); then, for a tinycil installed from a
    wheel, the per-user work copy of the project it ships (see tinycil.deploy.workspace).
    """
    from tinycil.deploy.workspace import WorkspaceError, installed_project

    override = os.environ.get(HOME_ENV)
    if override:
        root = Path(override).expanduser().resolve()
        if not (root / "boards").is_dir():
            raise BoardError(f"{HOME_ENV}={override} has no boards/ folder: point it at the tinycil "
                             "project folder (the one holding boards/ and firmware/)")
        return root
    checkout = Path(__file__).resolve().parent.parent.parent
    if _is_project(checkout):
        return checkout
    try:
        installed = installed_project()
    except WorkspaceError as exc:
        raise BoardError(str(exc)) from exc
    if installed is not None:
        return installed
    raise BoardError(f"this tinycil has neither a checkout around it ({checkout}) nor a packaged "
                     f"firmware project: reinstall it from a checkout (`pip install <checkout>`) or "
                     f"set {HOME_ENV} to the tinycil project folder (the one holding boards/ and "
                     "firmware/)")


def boards_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "boards"


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    vendor: str
    url: str
    emulated: bool
    description: str
    mcu: str
    cpu: str
    f_cpu: int                  # core clock in Hz the firmware is built for
    flash_bytes: int            # the budget the firmware is linked against
    ram_bytes: int
    stack_bytes: int
    baudrate: int               # serial default
    counter: str                # "cycles" or "instructions"
    flash_methods: tuple[str, ...]
    qemu_machine: str | None
    mass_storage_label: str | None
    upload_protocol: str | None
    manifest: Path

    def summary(self) -> dict:
        """A JSON-friendly view (for `tinycil boards --json`)."""
        return {
            "id": self.id, "name": self.name, "vendor": self.vendor, "url": self.url,
            "emulated": self.emulated, "description": self.description, "mcu": self.mcu,
            "cpu": self.cpu, "f_cpu": self.f_cpu, "flash_bytes": self.flash_bytes,
            "ram_bytes": self.ram_bytes, "stack_bytes": self.stack_bytes,
            "baudrate": self.baudrate, "counter": self.counter,
            "flash_methods": list(self.flash_methods), "qemu_machine": self.qemu_machine,
            "mass_storage_label": self.mass_storage_label,
        }


def _parse_hz(value) -> int:
    # PlatformIO writes clocks as strings with an "L" suffix ("216000000L").
    if value is None:
        return 0
    return int(str(value).rstrip("Ll"))


def _from_manifest(path: Path) -> Board:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BoardError(f"cannot read board manifest {path}: {exc}") from exc
    extra = data.get("tinycil")
    if not isinstance(extra, dict):
        raise BoardError(f"{path} has no \"tinycil\" object: every board manifest needs one "
                         "(serial, memory, counter, flash_methods, qemu)")
    build = data.get("build", {})
    upload = data.get("upload", {})
    memory = extra.get("memory", {})
    qemu = extra.get("qemu") or {}
    try:
        return Board(
            id=path.stem,
            name=data.get("name", path.stem),
            vendor=data.get("vendor", ""),
            url=data.get("url", ""),
            emulated=bool(extra.get("emulated", False)),
            description=extra.get("description", ""),
            mcu=build.get("mcu", ""),
            cpu=build.get("cpu", ""),
            f_cpu=_parse_hz(build.get("f_cpu")),
            flash_bytes=int(memory.get("flash_bytes", upload.get("maximum_size", 0))),
            ram_bytes=int(memory.get("ram_bytes", upload.get("maximum_ram_size", 0))),
            stack_bytes=int(memory.get("stack_bytes", 0)),
            baudrate=int(extra.get("serial", {}).get("baudrate", 115200)),
            counter=extra.get("counter", "cycles"),
            flash_methods=tuple(extra.get("flash_methods", [])),
            qemu_machine=qemu.get("machine"),
            mass_storage_label=extra.get("mass_storage_label"),
            upload_protocol=upload.get("protocol"),
            manifest=path,
        )
    except (TypeError, ValueError) as exc:
        raise BoardError(f"board manifest {path} has a malformed field: {exc}") from exc


def board_ids(root: Path | None = None) -> list[str]:
    folder = boards_dir(root)
    return sorted(p.stem for p in folder.glob("*.json"))


def list_boards(root: Path | None = None) -> list[Board]:
    return [_from_manifest(boards_dir(root) / f"{bid}.json") for bid in board_ids(root)]


def load_board(board_id: str, root: Path | None = None) -> Board:
    """The board with this id; a BoardError naming the known boards (and the likely one) if none."""
    known = board_ids(root)
    if board_id in known:
        return _from_manifest(boards_dir(root) / f"{board_id}.json")
    close = difflib.get_close_matches(board_id, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(known) if known else "(none: boards/ is empty)"
    raise BoardError(f"unknown board '{board_id}'.{hint} Known boards: {listing} "
                     "(`tinycil boards` lists them).")
