"""W&B Registry backend: ``wandb://ENTITY/PROJECT`` (or ``wandb://PROJECT``).

A version is a ``model`` artifact holding the Harvest package, logged from a short registration
run in PROJECT and linked into the collection NAME of the organisation's ``model`` registry
(``wandb-registry-model/NAME``), with the record as artifact metadata. W&B keeps ``latest``
itself, and moves an alias off its previous holder when it is set on another version.

Linking needs a connection: with ``WANDB_MODE=offline`` (or ``dryrun``/``disabled``) or without an
API key, every operation stops before writing anything and says what to run once online.
Only the offline behaviour is exercised by the tests (no W&B server here); the rules the online
path follows (package, SHA-256 check, alias rollback, ``latest``) are the shared ones in
:mod:`harvest.registry.api`, so this file holds nothing but W&B calls.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from harvest.registry.base import LATEST, RECORD_KEYS, RegistryBackend, RegistryError, VersionInfo
from harvest.tracking.context import wandb_server_unreachable

REGISTRY = "model"
DEFAULT_PROJECT = "harvest-registry"


class WandbBackend(RegistryBackend):
    """Versions and aliases in the W&B Registry.

    Args:
        uri: ``wandb://ENTITY/PROJECT``, ``wandb://PROJECT`` or ``wandb:`` (project ``harvest-registry``).

    """

    def __init__(self, uri: str) -> None:
        parsed = urlparse(uri)
        parts = [p for p in (parsed.netloc + parsed.path).split("/") if p]
        self.uri = uri
        self.entity = parts[0] if len(parts) > 1 else None
        self.project = parts[-1] if parts else DEFAULT_PROJECT
        self._api: Any = None

    # ------------------------------------------------------------------ connection
    def offline_reason(self) -> str | None:
        """Why the W&B Registry cannot be reached right now, or None when it can be tried."""
        return wandb_server_unreachable()

    @property
    def api(self) -> Any:
        """The W&B public API client (made on first use)."""
        if self._api is None:
            import wandb

            self._api = wandb.Api(timeout=30)
        return self._api

    def check_available(self, action: str, retry: str | None = None) -> None:
        reason = self.offline_reason()
        if reason:
            then = f" then `{retry}`" if retry else " then run the same command again"
            raise RegistryError(
                f"{action} needs a connection to the W&B Registry ({reason}); nothing was written. "
                f"Once online: `wandb login` (and unset WANDB_MODE),{then}."
            )

    # ------------------------------------------------------------------ naming
    def _target(self, name: str) -> str:
        return f"wandb-registry-{REGISTRY}/{name}"

    def _info(self, name: str, artifact: Any) -> VersionInfo:
        metadata = dict(artifact.metadata or {})
        record = {k: metadata[k] for k in RECORD_KEYS if k in metadata}
        aliases = sorted(a for a in artifact.aliases if a != LATEST and not re.fullmatch(r"v\d+", a))
        return VersionInfo(name, artifact.version.lstrip("v"), aliases, record, artifact.qualified_name)

    def _artifact(self, name: str, selector: str) -> Any:
        import wandb

        try:
            return self.api.artifact(f"{self._target(name)}:{selector}", type="model")
        except (wandb.errors.CommError, ValueError):
            return None

    # ------------------------------------------------------------------ reading
    def model_names(self) -> list[str]:
        registries = self.api.registries(filter={"name": REGISTRY})
        return sorted(collection.name for collection in registries.collections())

    def versions(self, name: str) -> list[VersionInfo]:
        import wandb

        try:
            found = list(self.api.artifacts("model", self._target(name)))
        except (wandb.errors.CommError, ValueError):
            return []
        return sorted((self._info(name, a) for a in found), key=lambda v: int(v.version))

    def holder(self, name: str, alias: str) -> VersionInfo | None:
        artifact = self._artifact(name, alias)
        return self._info(name, artifact) if artifact is not None else None

    # ------------------------------------------------------------------ writing
    def set_alias(self, name: str, alias: str, version: str) -> None:
        artifact = self._artifact(name, f"v{version}")
        if artifact is None:
            raise RegistryError(f"{name} has no version {version} in the W&B Registry.")
        artifact.aliases = sorted({*artifact.aliases, alias})
        artifact.save()

    def delete_alias(self, name: str, alias: str) -> None:
        artifact = self._artifact(name, alias)
        if artifact is not None:
            artifact.aliases = [a for a in artifact.aliases if a != alias]
            artifact.save()

    def delete_version(self, name: str, version: str) -> None:
        artifact = self._artifact(name, f"v{version}")
        if artifact is not None:
            source = artifact.source_artifact if artifact.is_link else None
            if artifact.is_link:
                artifact.unlink()
            (source or artifact).delete(delete_aliases=True)

    def create_version(self, name: str, package: Path, record: dict[str, Any]) -> VersionInfo:
        import wandb

        logged = None
        try:
            with wandb.init(
                entity=self.entity,
                project=self.project,
                job_type="register-model",
                name=f"register-{name}",
                dir=str(package.parent),
                settings=wandb.Settings(silent=True),
            ) as run:
                artifact = wandb.Artifact(name, type="model", metadata=dict(record))
                artifact.add_dir(str(package))
                logged = run.log_artifact(artifact)
                logged.wait()
                linked = run.link_artifact(logged, target_path=self._target(name))
        except Exception as err:  # remove the half-logged artifact, then report
            if logged is not None:
                try:
                    logged.delete(delete_aliases=True)
                except (wandb.errors.CommError, ValueError):
                    pass
            raise RegistryError(
                f"registering {name} in the W&B Registry failed, nothing was registered: {err}".splitlines()[
                    0
                ]
            ) from err
        return self._info(name, linked)

    def download(self, version: VersionInfo, dst: Path) -> Path:
        artifact = self._artifact(version.name, f"v{version.version}")
        if artifact is None:
            raise RegistryError(f"{version.label} is no longer in the W&B Registry.")
        return Path(artifact.download(root=str(dst / "package")))
