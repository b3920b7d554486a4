"""The host package stays layered: no module imports a layer above its own (see tinycil/__init__.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import tinycil

PACKAGE = Path(tinycil.__file__).parent

# Lower number = lower layer. A module may import its own layer and any lower one.
LAYERS = {
    "tinycil": 0, "tinycil.protocol_spec": 0, "tinycil.runfolder": 0, "tinycil.software": 0,
    "tinycil.datasets": 1,
    "tinycil.learn": 2,
    "tinycil.link": 3,
    "tinycil.deploy": 4,
    "tinycil.report": 5,
    "tinycil.cli": 6,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return LAYERS[name]
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and to tinycil/__init__.py")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Every tinycil module a file imports, also inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("tinycil")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinycil"):
            if node.module == "tinycil":  # from tinycil import learn -> tinycil.learn
                found += [f"tinycil.{a.name}" for a in node.names if a.name != "__version__"]
            else:
                found.append(node.module)
    return found


def test_no_import_runs_up_a_layer():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module_name(path)
        for target in _imports(path):
            if _layer(target) > _layer(me):
                wrong.append(f"{me} imports {target}")
    assert not wrong, "imports that run up a layer:\n" + "\n".join(wrong)


def test_only_a_handful_of_top_level_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "protocol_spec.py", "report.py", "runfolder.py", "software.py"]


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.parent.name}/ has no docstring"
        if init.parent.name != "datasets":
            assert "May import" in doc or "may import" in doc, f"{init.parent.name}/ does not say what it may import"
