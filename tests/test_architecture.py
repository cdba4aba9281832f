"""The layout is the architecture (docs/architecture.md): each package imports only from the
layers below it, the trainer sits above the run's definition and evaluation, and no function in
``src/`` grows past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "attnvision"

# bottom to top, as in docs/architecture.md; a module may import from strictly lower floors only
FLOORS = (
    ("registry", "checkpoint", "run_folder", "metrics", "losses", "stats", "ema", "label_sequence"),
    ("attention", "heads", "data", "compiled", "exported"),
    ("backbones",),
    ("__init__", "profile"),
    ("config",),
    ("evaluate",),
    ("train", "boost", "explain", "export"),
    ("study",),
    ("cli",),
    ("__main__",),
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """The top-level module or package of ``attnvision.x.y`` (``__init__`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> set[str]:
    """The attnvision modules ``path`` imports, at the top or inside functions."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "attnvision" or name.startswith("attnvision.")}


def test_every_room_has_a_floor():
    rooms = {room(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(FLOOR), f"place {sorted(rooms - set(FLOOR))} in FLOORS and docs/architecture.md"


def test_imports_only_run_downward():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        here = room(module_name(path))
        for target in imports(path):
            there = room(target)
            if there != here and FLOOR[there] >= FLOOR[here]:
                upward.append(f"{module_name(path)} imports {target}")
    assert not upward, "\n".join(sorted(upward))


def test_what_reads_runs_never_imports_the_trainer():
    """explain, the boost, export and the study read run folders (the study runs the trainer as a process)."""
    for path in [*(PACKAGE / "explain").rglob("*.py"), *(PACKAGE / "study").rglob("*.py"), PACKAGE / "boost.py",
                 PACKAGE / "export.py", PACKAGE / "evaluate.py", PACKAGE / "config.py"]:
        assert "attnvision.train" not in imports(path), path


def test_no_function_in_src_exceeds_60_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} has {lines} lines")
    assert not long, "split into named phases:\n" + "\n".join(long)


def test_module_classes_write_acronyms_in_capitals():
    """One naming rule for module classes (PEP 8): CapWords, an acronym in capitals (CBAM, ECA,
    CSRA, EVA, GAP), a head's class ending in Head."""
    words = ("Cbam", "Eca", "Csra", "Eva", "Gap", "Bam")
    wrong = []
    for path in [*(PACKAGE / "attention").glob("*.py"), *(PACKAGE / "heads").glob("*.py"),
                 *(PACKAGE / "backbones").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(w in node.name for w in words):
                wrong.append(f"{path.name}: {node.name}")
    assert not wrong, wrong
