"""What a registered model is on disk: a verified *package* built from a training run.

A package is a folder holding the checkpoint the run produced (``weights/model.ckpt``, optimizer
state dropped) beside the run's ``config.yaml``, ``training_summary.json`` and
``dataset_card.json``, and a manifest (``harvest_model.json``) naming the LightningModule class,
the metrics, the source run, the git commit, the dataset hash and the SHA-256 of every file.
Both registry backends store this folder; loading checks every file against the SHA-256 the
registry recorded and only then reads the weights with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from jsonargparse import Namespace
from jsonargparse.typing import import_object  # type: ignore[attr-defined]

from harvest.monitoring.reference_profile import EMBEDDINGS, PROFILE
from harvest.runs import directory as rd
from harvest.runs.directory import DEFAULT_RUNS_DIR, scalar_metrics, sha256_file, write_json_atomic

MANIFEST = "harvest_model.json"
WEIGHTS = "weights/model.ckpt"
#: Run files a package carries (the reference profile is the baseline of ``harvest monitor``).
RUN_FILES = ("config.yaml", "training_summary.json", "dataset_card.json", PROFILE, EMBEDDINGS)
#: Checkpoint entries only needed to resume training; a registered model does not carry them.
_TRAINING_STATE = ("optimizer_states", "lr_schedulers", "loops", "callbacks")


class RegistryError(Exception):
    """A registry operation that could not be done; the message is one line naming the fix."""


class IntegrityError(RegistryError):
    """A registered file whose SHA-256 differs from the one recorded at registration."""


@dataclass
class ModelSource:
    """A checkpoint and what its run directory says about it."""

    checkpoint: Path
    run_dir: Path | None
    run_name: str
    class_path: str
    metrics: dict[str, float] = field(default_factory=dict)
    monitor: str | None = None
    mode: str = "max"
    results: dict[str, Any] = field(default_factory=dict)
    pipeline: str = "harvest"
    experiment: str | None = None


def run_identity(run_dir: Path | None, run_name: str) -> tuple[str, str | None]:
    """Return the run's pipeline and MLflow experiment, as its ``config.yaml`` says.

    The pipeline is the data module's ``pipeline`` attribute (else the run name without its
    ``_YYYYmmdd_HHMMSS`` suffix); the experiment is the MLFlowLogger's, when the run had one.
    """
    config = {}
    if run_dir and (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    loggers = (config.get("trainer") or {}).get("logger")
    experiment = next(
        (
            (item.get("init_args") or {}).get("experiment_name")
            for item in (loggers if isinstance(loggers, list) else [loggers])
            if isinstance(item, dict) and str(item.get("class_path", "")).endswith("MLFlowLogger")
        ),
        None,
    )
    try:
        pipeline = rd.pipeline_name(Namespace(class_path=(config.get("data") or {}).get("class_path")))
    except (ImportError, AttributeError, ValueError):
        pipeline = "harvest"
    if pipeline == "harvest":
        parts = run_name.rsplit("_", 2)
        pipeline = parts[0] if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() else run_name
    return pipeline, experiment


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return rd.read_json(path)
    except ValueError as err:
        raise RegistryError(f"{err} Then register again.") from err


def _best_checkpoint(run_dir: Path) -> Path:
    found = rd.best_checkpoint(run_dir)
    if found is None:
        raise RegistryError(
            f"{run_dir} holds no checkpoint (checkpoints/*.ckpt): train with a ModelCheckpoint first."
        )
    return found


def _recorded_best(run_dir: Path | None, summary: dict[str, Any]) -> Path | None:
    if run_dir is None or not summary.get("best_checkpoint") or not summary.get("monitor"):
        return None
    recorded = Path(summary["best_checkpoint"])
    moved = run_dir / "checkpoints" / recorded.name
    return moved if moved.is_file() else recorded


def resolve_source(path_or_run: str | Path) -> ModelSource:
    """Find the checkpoint to register from a run directory, a ``.ckpt`` file or a run name under ``runs/``.

    Raises:
        RegistryError: Nothing registrable there, or the checkpoint does not name its LightningModule.

    """
    path = Path(path_or_run)
    if not path.exists() and (Path(DEFAULT_RUNS_DIR) / path).exists():
        path = Path(DEFAULT_RUNS_DIR) / path
    if not path.exists():
        raise RegistryError(
            f"{path_or_run}: no such run directory, checkpoint or run under {DEFAULT_RUNS_DIR}/; give a path."
        )
    if path.is_dir():
        run_dir: Path | None = path
        summary = _read_json(path / "training_summary.json")
        checkpoint = _best_checkpoint(path)
    else:
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        summary = _read_json(run_dir / "training_summary.json")
        checkpoint = path
        if not summary and not (run_dir / "config.yaml").is_file():
            run_dir = None
    hparams = load_checkpoint(checkpoint, mmap=True).get("hyper_parameters") or {}  # tensors stay on disk
    class_path = hparams.get("_class_path")
    if not class_path:
        raise RegistryError(
            f"{checkpoint} does not record its LightningModule class (hyper_parameters._class_path): "
            "register checkpoints written by `harvest fit`."
        )
    metrics = {k: v for k, v in scalar_metrics(summary.get("final_metrics") or {}).items() if v is not None}
    best = _recorded_best(run_dir, summary)
    if best is not None and best.resolve() == checkpoint.resolve() and summary.get("best_score") is not None:
        metrics[summary["monitor"]] = summary["best_score"]  # the registered checkpoint's score, not the last epoch's
    results = summary.get("results") or {}
    run_name = summary.get("run_name") or (run_dir.name if run_dir else checkpoint.stem)
    pipeline, experiment = run_identity(run_dir, run_name)
    return ModelSource(
        checkpoint=checkpoint,
        run_dir=run_dir,
        run_name=run_name,
        pipeline=pipeline,
        experiment=experiment,
        class_path=class_path,
        metrics=metrics,
        monitor=results.get("monitor") or summary.get("monitor"),  # the served predictor's metric, if named
        mode=results.get("mode") or summary.get("mode") or "max",
        results=results,
    )


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint read with ``weights_only=True`` (``mmap``: tensors stay on disk); one-line error if unsafe."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError… for a bad file
        raise RegistryError(
            f"{path} cannot be read as a safe checkpoint (weights_only=True): {err}".splitlines()[0]
        ) from err


def git_commit(run_dir: Path | None) -> str | None:
    """The commit the training run recorded (``-dirty`` when it had uncommitted changes), else ``None``.

    Not the commit of whoever registers the model later: that code did not train it.
    """
    info = rd.recorded_git(run_dir) if run_dir else {}
    if not info.get("commit"):
        return None
    return info["commit"] + ("-dirty" if info.get("dirty") == "true" else "")


def dataset_hash(run_dir: Path | None) -> str | None:
    """Return the content hash of the run's data set from its ``dataset_card.json`` (None without a card)."""
    card = _read_json(run_dir / "dataset_card.json") if run_dir else {}
    return card.get("content_hash")


def build_package(source: ModelSource, dst: Path, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """Write the package folder for ``source`` into ``dst`` and return its manifest.

    Args:
        source: What to register.
        dst: An empty or missing folder.
        metrics: Metrics that override or add to the run's own.

    """
    checkpoint = load_checkpoint(source.checkpoint)
    for key in _TRAINING_STATE:
        checkpoint.pop(key, None)
    (dst / WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, dst / WEIGHTS)
    for name in RUN_FILES:
        if source.run_dir and (source.run_dir / name).is_file():
            shutil.copy2(source.run_dir / name, dst / name)
    files = {p.relative_to(dst).as_posix(): sha256_file(p) for p in sorted(dst.rglob("*")) if p.is_file()}
    manifest = {
        "format": 1,
        "class_path": source.class_path,
        "metrics": {**source.metrics, **(metrics or {})},
        "monitor": source.monitor,
        "mode": source.mode,
        "results": source.results,
        "run_name": source.run_name,
        "pipeline": source.pipeline,
        "experiment": source.experiment,
        "run_dir": str(source.run_dir.resolve()) if source.run_dir else None,
        "checkpoint": str(source.checkpoint.resolve()),
        "checkpoint_sha256": sha256_file(source.checkpoint),
        "git_commit": git_commit(source.run_dir),
        "dataset_hash": dataset_hash(source.run_dir),
        "sha256": files,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(dst / MANIFEST, manifest)
    return manifest


def verify_package(package: Path, sha256: dict[str, str], where: str) -> None:
    """Refuse a package whose files differ from the SHA-256 recorded at registration.

    Args:
        package: The downloaded package folder.
        sha256: Relative path -> hex digest, as recorded by the registry.
        where: How the user names this version (for the message), e.g. ``grocery-ssl@production``.

    Raises:
        IntegrityError: A file is missing or its digest differs.

    """
    if WEIGHTS not in sha256:
        raise IntegrityError(
            f"{where}: the registry records no SHA-256 for {WEIGHTS}; re-register the model from its run."
        )
    for relative, expected in sha256.items():
        path = package / relative
        if not path.is_file():
            raise IntegrityError(
                f"{where}: {relative} is missing from the registered files; re-register it from its run."
            )
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"{where}: {relative} has SHA-256 {actual[:12]}… but {expected[:12]}… was recorded at "
                "registration; "
                "refusing to load a changed file. Re-register the model from its run directory."
            )


def load_package(
    package: Path, record: dict[str, Any] | None = None, where: str = "", map_location: str = "cpu"
) -> pl.LightningModule:
    """Verify a package and load its LightningModule, ready to predict (eval mode).

    Args:
        package: The package folder.
        record: ``sha256`` and ``class_path`` as the registry recorded them; the package's own
            manifest when omitted (an MLflow model loaded without the registry at hand).
        where: How the user names this version, for messages.
        map_location: Device to load the weights onto.

    """
    record = record if record is not None else _read_json(package / MANIFEST)
    where = where or str(package)
    verify_package(package, record.get("sha256") or {}, where)
    class_path = record.get("class_path") or ""
    try:
        cls = import_object(class_path)
    except (ImportError, AttributeError, ValueError) as err:
        raise RegistryError(
            f"{where}: its class {class_path!r} cannot be imported ({err}); install the code that trained it."
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
        raise RegistryError(f"{where}: {class_path!r} is not a LightningModule; refusing to load it.")
    module = cls.load_from_checkpoint(package / WEIGHTS, map_location=map_location, weights_only=True)
    return module.eval()
