"""Imports point one way: entry points -> components (lightning_modules, datamodules, callbacks) -> core.

Read from the source (every ``import``, inside functions too), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ("callbacks", "datamodules", "lightning_modules")
#: Sub-packages of ``harvest/`` that are entry points (commands and what composes a run); the rest is core.
ENTRY_PACKAGES = ("harvest.__main__", "harvest.commands", "harvest.lightning_cli", "harvest.sweeps")
#: Services that compose components (a folder of images predicted with a model's data helpers).
COMPOSING_PACKAGES = ("harvest.serving",)


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _layer(module: str) -> str | None:
    top = module.split(".")[0]
    if top == "harvest":
        name = ".".join(module.split(".")[:2])
        if name in ENTRY_PACKAGES:
            return "entry"
        if name in COMPOSING_PACKAGES:
            return "composing"
        return "core" if name != "harvest" else None
    return top if top in COMPONENTS else None


#: (importer's layer, imported layer) pairs that break the direction.
FORBIDDEN = {
    ("core", "callbacks"),
    ("core", "datamodules"),
    ("core", "lightning_modules"),
    ("core", "entry"),
    ("callbacks", "entry"),
    ("datamodules", "entry"),
    ("lightning_modules", "entry"),
    ("datamodules", "callbacks"),
    ("lightning_modules", "callbacks"),
}

SOURCES = sorted(p for folder in ("harvest", *COMPONENTS) for p in (REPO / folder).rglob("*.py"))


def _violations(path: Path) -> list[str]:
    importer = _layer(_module(path))
    return [
        f"{_module(path)} ({importer}) imports {name} ({_layer(name)})"
        for name in sorted(_imports(path))
        if (importer, _layer(name)) in FORBIDDEN
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_one_way(path: Path) -> None:
    assert _violations(path) == []


def test_the_check_sees_a_lazy_import_of_a_higher_layer(tmp_path: Path) -> None:
    fake = REPO / "harvest" / "core" / "_layers_probe.py"
    fake.write_text("def f():\n    from callbacks.training_summary import TrainingSummary\n")
    try:
        probe = "harvest.core._layers_probe (core) imports callbacks.training_summary"
        assert _violations(fake) == [f"{probe} (callbacks)", f"{probe}.TrainingSummary (callbacks)"]
    finally:
        fake.unlink()
