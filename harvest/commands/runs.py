"""``harvest runs clean``: free the disk that old runs hold, never touching registered models.

    harvest runs clean [--keep 3] [--runs-dir runs] [--whole] [--include-registered] [--dry-run]

The newest ``--keep`` runs (by start: their ``config.yaml``) stay as they are. Older runs lose their
checkpoints (``*.ckpt`` anywhere in the run directory: about 135 MB each for the grocery demo, whose
Adam state is twice its weights), or with ``--whole`` the whole run directory. ``--dry-run`` lists
the same table and deletes nothing.

Registered models are never touched: a registered version is a *package*, a copy of the weights made
at registration and stored by the registry (MLflow's artifact store, W&B), checked against its SHA-256
on every load. The tool still asks the registry which run files versions were built from (the
``checkpoint`` each version records) and keeps those files, and the directories holding them, unless
``--include-registered`` is given: their own copies are what resuming a registered model's training
needs (packages carry weights only).
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

from harvest.core.console import console
from harvest.lightning_cli.run_setup import DEFAULT_RUNS_DIR
from harvest.registry.api import default_uri, open_registry
from harvest.registry.base import RegistryError


@dataclass
class Removal:
    """One path the clean-up removes (or keeps, with the reason)."""

    path: Path
    size: int
    kept_for: str = ""  # the registered versions (``name:version``) built from this file
    keep: bool = False  # left in place: it backs registered versions and they were not included


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def run_dirs(root: Path) -> list[Path]:
    """Run directories under ``root`` (a ``config.yaml``, ``training_summary.json`` or ``checkpoints/``), newest first.

    Sweep folders that hold runs one level down are searched too; a run's own sub-runs belong to it.
    """
    found: list[Path] = []

    def is_run(path: Path) -> bool:
        return any((path / name).exists() for name in ("config.yaml", "training_summary.json", "checkpoints"))

    for child in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if is_run(child):
            found.append(child)
        else:
            found.extend(p for p in sorted(child.iterdir()) if p.is_dir() and is_run(p))

    def started(path: Path) -> float:
        marker = path / "config.yaml"
        return (marker if marker.exists() else path).stat().st_mtime

    return sorted(found, key=started, reverse=True)


def registered_files(uri: str) -> dict[Path, list[str]]:
    """Checkpoint files that registered versions were built from -> the versions (``name:version``).

    Raises:
        RegistryError: The registry cannot be read (then nothing is removed).
    """
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return {}  # no local registry store: nothing was registered here
    backing: dict[Path, list[str]] = {}
    for version in open_registry(uri).listing():
        checkpoint = version.record.get("checkpoint")
        if checkpoint:
            backing.setdefault(Path(checkpoint).resolve(), []).append(version.label)
    return backing


def plan(
    root: Path, keep: int, whole: bool, backing: dict[Path, list[str]], include_registered: bool = False
) -> list[Removal]:
    """What cleaning ``root`` removes: checkpoints (or whole runs) of all but the ``keep`` newest runs.

    A file that backs registered versions is listed with ``kept_for`` naming them; unless
    ``include_registered``, it is kept (``keep``), and so is the run directory around it.
    """
    removals: list[Removal] = []
    for run in run_dirs(root)[keep:]:
        checkpoints = sorted(run.rglob("*.ckpt"))
        versions = {c: ", ".join(backing[c.resolve()]) for c in checkpoints if c.resolve() in backing}
        if whole and (include_registered or not versions):
            removals.append(Removal(run, size_of(run), "; ".join(versions.values())))
            continue
        for checkpoint in checkpoints:
            kept_for = versions.get(checkpoint, "")
            keep_it = bool(kept_for) and not include_registered
            removals.append(Removal(checkpoint, size_of(checkpoint), kept_for, keep_it))
    return removals


def clean(
    root: Path,
    keep: int,
    whole: bool = False,
    include_registered: bool = False,
    dry_run: bool = False,
    registry_uri: str | None = None,
) -> list[Removal]:
    """Remove what :func:`plan` lists, except what it keeps; the plan.

    Raises:
        ValueError: ``keep`` is negative.
        RegistryError: The registry cannot be read (nothing is removed then).
    """
    if keep < 0:
        raise ValueError(f"--keep {keep}: give how many of the newest runs to keep untouched (0 or more).")
    backing = registered_files(registry_uri or default_uri())
    removals = plan(root, keep, whole, backing, include_registered)
    for removal in removals if not dry_run else []:
        if removal.keep:
            continue
        if removal.path.is_dir():
            shutil.rmtree(removal.path)
        else:
            removal.path.unlink(missing_ok=True)
    return removals


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size / 1e3:,.1f} kB"


def report(removals: list[Removal], dry_run: bool) -> None:
    """Print what was (or would be) removed and kept, and the total freed."""
    out = console()
    verb = "would remove" if dry_run else "removed"
    for removal in removals:
        if removal.keep:
            action, why = "kept", f"  (registered {removal.kept_for} was built from it)"
        else:
            action = verb
            why = f"  (registered {removal.kept_for}: the registry keeps its own copy)" if removal.kept_for else ""
        line = f"{action:<12} {_mb(removal.size):>10}  {removal.path}{why}"
        out.print(line, highlight=False, markup=False)
    gone = [r for r in removals if not r.keep]
    out.print(f"{verb} {_mb(sum(r.size for r in gone))} in {len(gone)} paths", highlight=False)


def main(argv: list[str] | None = None) -> list[Removal]:
    """``harvest runs clean``: remove old runs' checkpoints (or whole runs), keeping registered models."""
    parser = argparse.ArgumentParser(prog="harvest runs", description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("clean", help="remove old runs' checkpoints (or whole runs)")
    sub.add_argument("--keep", type=int, default=3, help="newest runs left untouched (default: 3)")
    sub.add_argument("--runs-dir", type=Path, default=Path(DEFAULT_RUNS_DIR), help="folder of runs (default: runs)")
    sub.add_argument("--whole", action="store_true", help="remove whole old run directories, not just checkpoints")
    sub.add_argument("--include-registered", action="store_true",
                     help="remove the files registered versions were built from too (their copies stay)")  # fmt: skip
    sub.add_argument("--registry", help="registry URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    sub.add_argument("--dry-run", action="store_true", help="list what would be removed; delete nothing")
    args = parser.parse_args(argv)
    try:
        if not args.runs_dir.is_dir():
            raise ValueError(f"--runs-dir {args.runs_dir}: no such folder; give the folder that holds your runs.")
        removals = clean(args.runs_dir, args.keep, args.whole, args.include_registered, args.dry_run, args.registry)
    except (ValueError, RegistryError) as error:
        console(stderr=True).print(f"harvest runs clean: {error}", highlight=False, markup=False)
        raise SystemExit(2) from None
    report(removals, args.dry_run)
    return removals
