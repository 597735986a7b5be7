"""Harvest's model registry: register, list, compare, promote and load trained models.

The lifecycle of the grocery seed — Training → Register (``latest``) → Compare (``staging``) →
Promote (``production``) — from Python and from ``harvest registry`` (:mod:`harvest.commands.registry`)::

    from harvest.registry.api import load_model, register_model

    register_model("runs/groceries_20250101_120000", "grocery-ssl-classifier", aliases=["staging"])
    model = load_model("grocery-ssl-classifier", alias="production")  # LightningModule, eval mode

Two backends behind one interface, chosen by URI: the MLflow Model Registry (default:
``sqlite:///mlflow.db``, ``$MLFLOW_TRACKING_URI`` or any server) and the W&B Registry
(``wandb://ENTITY/PROJECT``). ``latest`` always names the newest version and is never stored.
Every rule lives here once: which checkpoint, what is recorded, the SHA-256 check before any
weight is read, and putting aliases back when a registration or promotion fails half-way.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl

from harvest.registry.base import LATEST, ModelRef, RegistryBackend, RegistryError, VersionInfo
from harvest.registry.package import build_package, load_package, resolve_source, sha256_file, verify_package

__all__ = [
    "LATEST",
    "ModelRef",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "default_uri",
    "download_model",
    "load_model",
    "open_registry",
    "promote_model",
    "register_model",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_ALIAS = re.compile(r"[A-Za-z_][\w-]*")
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")


def default_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the local SQLite store ``sqlite:///mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def open_registry(uri: str | None = None) -> Registry:
    """Open the registry at ``uri``: ``wandb://ENTITY/PROJECT`` for W&B, else an MLflow tracking URI."""
    uri = uri or default_uri()
    if uri.startswith("wandb:"):
        from harvest.registry.wandb_backend import WandbBackend

        return Registry(WandbBackend(uri))
    from harvest.registry.mlflow_backend import MlflowBackend

    return Registry(MlflowBackend(uri))


def _one_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class Registry:
    """The registry operations, identical for every backend.

    Args:
        backend: Where versions are stored (:class:`~harvest.registry.mlflow_backend.MlflowBackend`, W&B).

    """

    def __init__(self, backend: RegistryBackend) -> None:
        self.backend = backend

    @property
    def uri(self) -> str:
        """The backend's URI."""
        return self.backend.uri

    @contextmanager
    def _service(self, action: str, retry: str | None = None) -> Iterator[None]:
        """Run backend calls, turning a service failure into a one-line :class:`RegistryError`."""
        self.backend.check_available(action, retry)
        try:
            yield
        except RegistryError:
            raise
        except Exception as err:  # the service's own exception types differ per backend
            raise RegistryError(f"{action} failed at {self.uri}: {_one_line(err)}") from err

    # ------------------------------------------------------------------ reading
    def _missing_model(self, name: str) -> RegistryError:
        names = self.backend.model_names()
        return RegistryError(
            f"no registered model named {name!r} at {self.uri} (models: {', '.join(names) or 'none'})."
        )

    def _with_latest(self, info: VersionInfo, versions: list[VersionInfo]) -> VersionInfo:
        newest = bool(versions) and info.version == versions[-1].version
        info.aliases = [LATEST] * newest + sorted(a for a in info.aliases if a != LATEST)
        return info

    def resolve(self, ref: str | ModelRef) -> VersionInfo:
        """Find the version a reference names (``NAME`` and ``NAME@latest`` mean the newest)."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        with self._service(f"finding {ref}"):
            versions = self.backend.versions(ref.name)
            if not versions:
                raise self._missing_model(ref.name)
            if ref.version:
                found = next((v for v in versions if v.version == ref.version), None)
                if found is None:
                    known = ", ".join(v.version for v in versions)
                    raise RegistryError(
                        f"{ref.name} has no version {ref.version} (versions: {known}); nothing was changed."
                    )
            elif ref.alias and ref.alias != LATEST:
                found = self.backend.holder(ref.name, ref.alias)
                if found is None:
                    held = sorted({a for v in versions for a in v.aliases})
                    raise RegistryError(
                        f"{ref.name} has no alias {ref.alias!r} (it has: {', '.join([*held, LATEST])})."
                    )
            else:
                found = versions[-1]
            return self._with_latest(found, versions)

    def listing(self) -> list[VersionInfo]:
        """Every version of every model, by name then version, ``latest`` marked."""
        with self._service("listing models"):
            out = []
            for name in self.backend.model_names():
                versions = self.backend.versions(name)
                out.extend(self._with_latest(v, versions) for v in versions)
            return out

    def compare(self, refs: Sequence[str | ModelRef]) -> list[VersionInfo]:
        """Resolve several references at once (``harvest registry compare`` tabulates their metrics)."""
        return [self.resolve(ref) for ref in refs]

    @staticmethod
    def pipeline_of(path_or_run: str | Path) -> str:
        """Return the pipeline of the run that :meth:`register` would take its checkpoint from."""
        return resolve_source(path_or_run).pipeline

    def find_registered(self, path_or_run: str | Path, name: str) -> VersionInfo | None:
        """Return the version of ``name`` registered from the same checkpoint file (same SHA-256), if any."""
        digest = sha256_file(resolve_source(path_or_run).checkpoint)
        with self._service(f"looking up {name}"):
            versions = self.backend.versions(name)
            same = [v for v in versions if v.record.get("checkpoint_sha256") == digest]
            return self._with_latest(same[-1], versions) if same else None

    # ------------------------------------------------------------------ writing
    def _check_alias(self, alias: str) -> None:
        if alias == LATEST:
            raise RegistryError(
                "'latest' always names the newest version and cannot be moved; promote to another alias."
            )
        if not _ALIAS.fullmatch(alias) or re.fullmatch(r"v\d+", alias):
            raise RegistryError(
                f"alias {alias!r} is not valid: use letters, digits, '_' and '-', e.g. staging or production."
            )

    def _move_aliases(
        self, target: VersionInfo, aliases: Sequence[str], undo: Callable[[], None] | None = None
    ) -> None:
        """Point each alias at ``target``; on failure put the moved ones back, run ``undo`` and raise."""
        moved: list[tuple[str, VersionInfo | None]] = []
        for alias in aliases:
            previous = None
            try:
                previous = self.backend.holder(target.name, alias)
                self.backend.set_alias(target.name, alias, target.version)
            except Exception as err:  # any service failure: restore, then report
                notes = [self._restore(target.name, a, p) for a, p in reversed(moved)]
                notes.append(f"{alias} still points to {previous.label if previous else 'nothing'}")
                if undo is not None:
                    notes.append(self._undo(undo))
                raise RegistryError(
                    f"moving alias {alias!r} to {target.label} failed ({_one_line(err)}); "
                    + "; ".join(notes)
                    + "."
                ) from err
            moved.append((alias, previous))

    @staticmethod
    def _undo(undo: Callable[[], None]) -> str:
        try:
            undo()
        except Exception as err:  # report it beside the original failure
            return f"the new version could NOT be removed ({_one_line(err)})"
        return "nothing was registered"

    def _restore(self, name: str, alias: str, previous: VersionInfo | None) -> str:
        try:
            if previous is None:
                self.backend.delete_alias(name, alias)
            else:
                self.backend.set_alias(name, alias, previous.version)
        except Exception as err:  # report it: the user must fix the alias by hand
            fix = (
                f"harvest registry promote {name} --version {previous.version} --to-alias {alias}"
                if previous
                else "delete it"
            )
            return f"{alias} could NOT be put back ({_one_line(err)}): run `{fix}`"
        return f"{alias} was put back on {previous.label if previous else 'nothing'}"

    def register(
        self,
        path_or_run: str | Path,
        name: str,
        metrics: dict[str, float] | None = None,
        aliases: Sequence[str] = (LATEST,),
    ) -> VersionInfo:
        """Register the best checkpoint of a run (or a checkpoint file) as a new version of ``name``.

        Args:
            path_or_run: Run directory, ``.ckpt`` file or run name under ``runs/``.
            name: Registered model name.
            metrics: Metrics to record besides (or instead of) the run's final metrics.
            aliases: Aliases to point at the new version (``latest`` is implied).

        Raises:
            RegistryError: Nothing was registered; the message says why and what still holds each alias.

        """
        if not _NAME.fullmatch(name):
            raise RegistryError(f"model name {name!r} is not valid: use letters, digits, '.', '_' and '-'.")
        aliases = [a for a in dict.fromkeys(aliases) if a != LATEST]
        for alias in aliases:
            self._check_alias(alias)
        options = [f"--alias {a}" for a in aliases] + [
            f"--metric {k}={v}" for k, v in (metrics or {}).items()
        ]
        retry = " ".join(
            [
                "harvest registry register",
                str(path_or_run),
                "--name",
                name,
                *options,
                "--tracking-uri",
                self.uri,
            ]
        )
        with self._service(f"registering {name}", retry):
            source = resolve_source(path_or_run)
            with tempfile.TemporaryDirectory(prefix="harvest-register-") as tmp:
                package = Path(tmp) / "package"
                manifest = build_package(source, package, metrics)
                created = self.backend.create_version(name, package, manifest)
            self._move_aliases(
                created, aliases, undo=lambda: self.backend.delete_version(name, created.version)
            )
            return self.resolve(ModelRef(name, created.version))

    def promote(
        self, name: str, version: str | int, alias: str = "production"
    ) -> tuple[VersionInfo | None, VersionInfo]:
        """Point ``alias`` at ``version``; returns (previous holder or None, new holder)."""
        self._check_alias(alias)
        retry = f"harvest registry promote {name} --version {version} --to-alias {alias}"
        retry += f" --tracking-uri {self.uri}"
        with self._service(f"promoting {name}:{version} to {alias}", retry):
            target = self.resolve(ModelRef(name, str(version)))
            previous = self.backend.holder(name, alias)
            self._move_aliases(target, [alias])
            return previous, self.resolve(ModelRef(name, str(version)))

    # ------------------------------------------------------------------ files
    def _fetch(self, info: VersionInfo, dst: Path, where: str) -> Path:
        with self._service(f"downloading {info.label}"):
            package = self.backend.download(info, dst)
        verify_package(package, info.record.get("sha256") or {}, where)
        return package

    def download(self, ref: str | ModelRef, dst: str | Path) -> Path:
        """Download a version's package under ``dst``, checked against its recorded SHA-256.

        Returns:
            The package folder (inside the MLflow model folder for the MLflow backend).

        """
        info = self.resolve(ref)
        return self._fetch(info, Path(dst), f"{ref} ({info.label})")

    def load(self, ref: str | ModelRef, map_location: str = "cpu") -> pl.LightningModule:
        """Load a version's LightningModule, ready to predict.

        Every file is checked against the SHA-256 recorded at registration before the weights are
        read with ``torch.load(weights_only=True)``.
        """
        info = self.resolve(ref)
        where = f"{ref} ({info.label})"
        with tempfile.TemporaryDirectory(prefix="harvest-load-") as tmp:
            package = self._fetch(info, Path(tmp), where)
            return load_package(package, info.record, where, map_location)


def register_model(
    path: str | Path,
    name: str,
    metrics: dict[str, float] | None = None,
    aliases: Sequence[str] = (LATEST,),
    tracking_uri: str | None = None,
) -> VersionInfo:
    """Register a run's best checkpoint (or a ``.ckpt``) as a new version; see :meth:`Registry.register`."""
    return open_registry(tracking_uri).register(path, name, metrics, aliases)


def load_model(
    name: str,
    alias: str | None = "production",
    version: str | int | None = None,
    tracking_uri: str | None = None,
    map_location: str = "cpu",
) -> pl.LightningModule:
    """Load a registered model ready to predict (SSL classifier with estimators, or Mask R-CNN detector).

    Args:
        name: Registered model name.
        alias: Alias to load (``production``, ``staging``, ``latest``…); ignored when ``version`` is given.
        version: A version number instead of an alias.
        tracking_uri: Registry URI (default: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
        map_location: Device for the weights.

    """
    ref = ModelRef(name, str(version)) if version is not None else ModelRef(name, alias=alias)
    return open_registry(tracking_uri).load(ref, map_location)


def download_model(ref: str, dst: str | Path, tracking_uri: str | None = None) -> Path:
    """Download ``NAME[:VERSION|@ALIAS]`` under ``dst`` (SHA-256 checked) and return its package folder."""
    return open_registry(tracking_uri).download(ref, dst)


def promote_model(
    name: str, version: str | int, alias: str = "production", tracking_uri: str | None = None
) -> tuple[VersionInfo | None, VersionInfo]:
    """Point ``alias`` at ``version``; returns (previous holder or None, new holder)."""
    return open_registry(tracking_uri).promote(name, version, alias)
