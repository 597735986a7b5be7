"""MLflow Model Registry backend: the local SQLite store or any tracking server.

Each version is a real MLflow model (pyfunc flavor, models-from-code: :mod:`harvest.registry.pyfunc`
with the package folder as its artifact), logged as an MLflow 3 LoggedModel of the run that
trained it (found by run name in the run's MLflow experiment, else a run made for
the registration), and registered with the record as ``harvest.*`` version tags.
``mlflow models serve -m models:/NAME@production`` serves it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any

from harvest.registry.base import RegistryBackend, RegistryError, VersionInfo, decode_record, encode_record
from harvest.tracking.context import server_problem

MODEL_ARTIFACT = "model"
PACKAGE_ARTIFACT = "package"
#: Harvest's packages, shipped with every model as ``code_paths``: the served model runs the code that registered it.
CODE_PACKAGES = ("harvest", "lightning_modules", "datamodules", "callbacks")
#: Needed by the pyfunc beside Harvest's own dependencies.
_SERVING_REQUIREMENTS = ("pandas",)


def _pinned_requirements() -> list[str]:
    """Harvest's dependencies (its installed metadata, extras left out) pinned to the versions installed here."""
    try:
        declared = [r for r in requires("harvest-mlops") or [] if "extra ==" not in r]
    except PackageNotFoundError:  # running from a source tree: the core of what the model imports
        declared = ["torch", "torchvision", "lightning", "torchmetrics", "jsonargparse", "scikit-learn",
                    "mlflow", "numpy", "pillow", "pycocotools", "pyyaml", "scipy"]  # fmt: skip
    pinned = []
    for requirement in [*declared, *_SERVING_REQUIREMENTS]:
        dist = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        try:
            pinned.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            pinned.append(requirement)
    return sorted(set(pinned))


def _code_paths(dst: Path) -> list[str]:
    """Copies of Harvest's packages (no ``__pycache__``) under ``dst``, for ``code_paths``."""
    root = Path(__file__).resolve().parents[2]  # the folder holding harvest/, callbacks/, ...
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    return [str(shutil.copytree(root / name, dst / name, ignore=ignore)) for name in CODE_PACKAGES]


@contextmanager
def _quiet() -> Iterator[None]:
    """No per-file progress bars, no advice to add an input example (the signature says what goes in)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(name)
    os.environ[name] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


#: Seconds to wait for a tracking server's /health answer before calling it down.
HEALTH_TIMEOUT = 5.0


class MlflowBackend(RegistryBackend):
    """Registered models, versions and aliases in an MLflow tracking store.

    Args:
        uri: Tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``…); the registry URI is the same.

    """

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self.uri = uri
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            # MLflow caches stores per URI string: pin a relative SQLite file to this working directory
            uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
        self._resolved_uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def check_available(self, action: str, retry: str | None = None) -> None:
        """Fail in seconds when the tracking server is down (MLflow itself retries for minutes)."""
        problem = server_problem(self.uri, HEALTH_TIMEOUT)
        if problem:
            then = f"then `{retry}`" if retry else "then run the same command again"
            raise RegistryError(
                f"{action}: MLflow server {self.uri} cannot be reached ({problem}); nothing was changed. Start it "
                f"(mlflow server --host 127.0.0.1 --port <port>) or give a reachable --tracking-uri, {then}."
            )

    # ------------------------------------------------------------------ reading
    def _info(self, mv: Any) -> VersionInfo:
        return VersionInfo(
            mv.name, str(mv.version), list(mv.aliases or []), decode_record(mv.tags or {}), mv.source
        )

    def _missing(self, err: Exception) -> bool:
        return getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(err).lower()

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models(max_results=1000))

    def versions(self, name: str) -> list[VersionInfo]:
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.client.get_registered_model(name).aliases or {}
        except MlflowException as err:
            if self._missing(err):
                return []
            raise
        out = []
        for mv in self.client.search_model_versions(f"name = '{name}'", max_results=10000):
            info = self._info(mv)  # search results carry no aliases: take them from the registered model
            info.aliases = sorted(a for a, v in aliases.items() if str(v) == info.version)
            out.append(info)
        return sorted(out, key=lambda v: int(v.version))

    def holder(self, name: str, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(name, alias))
        except MlflowException as err:
            if self._missing(err) or getattr(err, "error_code", "") == "INVALID_PARAMETER_VALUE":
                return None
            raise

    # ------------------------------------------------------------------ writing
    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def delete_version(self, name: str, version: str) -> None:
        self.client.delete_model_version(name, version)
        if not self.client.search_model_versions(f"name = '{name}'", max_results=1):
            self.client.delete_registered_model(name)  # it was the first version: leave no empty model behind

    def _source_run(self, record: dict[str, Any], experiment_name: str) -> tuple[str, str, bool]:
        """(experiment id, run id, whether the run was made here): the training run when this store has it."""
        experiment = self.client.get_experiment_by_name(experiment_name)
        run_name = record.get("run_name") or experiment_name
        if experiment is not None:
            found = self.client.search_runs(
                [experiment.experiment_id],
                f"attributes.run_name = '{run_name}'",
                max_results=1,
                order_by=["attributes.start_time DESC"],
            )
            if found:
                return experiment.experiment_id, found[0].info.run_id, False
            experiment_id = experiment.experiment_id
        else:
            experiment_id = self.client.create_experiment(experiment_name)
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={
                "harvest.run_dir": str(record.get("run_dir")),
                "mlflow.note.content": "Made by `harvest registry register`.",
            },
        )
        return experiment_id, run.info.run_id, True

    def _save_pyfunc(self, package: Path, dst: Path, record: dict[str, Any]) -> None:
        import mlflow.pyfunc

        from harvest.registry import pyfunc as registry_pyfunc
        from harvest.serving.model import input_example, is_detector, model_signature

        with _quiet(), tempfile.TemporaryDirectory(prefix="harvest-code-") as code:
            mlflow.pyfunc.save_model(
                path=str(dst),
                python_model=registry_pyfunc.__file__,
                artifacts={PACKAGE_ARTIFACT: str(package)},
                code_paths=_code_paths(Path(code)),
                pip_requirements=_pinned_requirements(),
                signature=model_signature(is_detector(record.get("class_path") or "")),
                input_example=input_example(),
            )

    def create_version(self, name: str, package: Path, record: dict[str, Any]) -> VersionInfo:
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
        from mlflow.exceptions import MlflowException

        made_model = made_run = False
        logged = run_id = None
        try:
            try:
                self.client.get_registered_model(name)
            except MlflowException as err:
                if not self._missing(err):
                    raise
                self.client.create_registered_model(
                    name, description="Registered by Harvest (harvest registry)."
                )
                made_model = True
            experiment = record.get("experiment") or record.get("pipeline") or "harvest"
            experiment_id, run_id, made_run = self._source_run(record, experiment)
            logged = self.client.create_logged_model(
                experiment_id,
                name=MODEL_ARTIFACT,
                source_run_id=run_id,
                model_type="harvest",
                tags={"harvest.class_path": record.get("class_path", "")},
            )
            with tempfile.TemporaryDirectory() as tmp:
                self._save_pyfunc(package, Path(tmp) / MODEL_ARTIFACT, record)
                self.client.log_model_artifacts(logged.model_id, str(Path(tmp) / MODEL_ARTIFACT))
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
            if made_run:
                now = int(datetime.now(timezone.utc).timestamp() * 1000)
                metrics = [
                    Metric(k, float(v), now, 0, model_id=logged.model_id)
                    for k, v in (record.get("metrics") or {}).items()
                ]
                self.client.log_batch(run_id, metrics=metrics)
                self.client.set_terminated(run_id, "FINISHED")
            mv = self.client.create_model_version(
                name,
                source=logged.artifact_location,
                run_id=run_id,
                tags=encode_record(record),
                description=f"{record.get('class_path')} from run {record.get('run_name')}",
                model_id=logged.model_id,
            )
        except Exception as err:  # undo what was made here, then say what failed
            self._undo(name, made_model, logged.model_id if logged else None, run_id if made_run else None)
            raise RegistryError(
                f"registering {name} in {self.uri} failed, nothing was registered: {err}".splitlines()[0]
            ) from err
        return self._info(mv)

    def _undo(self, name: str, made_model: bool, model_id: str | None, run_id: str | None) -> None:
        steps = [
            (model_id is not None, lambda: self.client.delete_logged_model(model_id)),
            (run_id is not None, lambda: self.client.delete_run(run_id)),
            (made_model, lambda: self.client.delete_registered_model(name)),
        ]
        for needed, step in steps:
            if needed:
                try:
                    step()
                except Exception:  # noqa: BLE001 - best effort: the original error is what the user needs
                    pass

    def download(self, version: VersionInfo, dst: Path) -> Path:
        import mlflow.artifacts

        with _quiet():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=version.source, dst_path=str(dst), tracking_uri=self._resolved_uri
            )
        package = Path(local) / "artifacts" / PACKAGE_ARTIFACT
        if not package.is_dir():
            raise RegistryError(
                f"{version.label}: the MLflow model at {version.source} has no Harvest package; re-register."
            )
        return package
