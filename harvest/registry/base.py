"""What both registry backends share: the version record, the backend interface and errors.

A backend only stores and finds things (versions, aliases, files). Everything with a rule in it
(which checkpoint, what is recorded, the SHA-256 check, ``latest``, rolling aliases back after a
failure, comparing) lives once in :mod:`harvest.registry.api`, whatever the backend.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvest.registry.package import IntegrityError, RegistryError

__all__ = [
    "IntegrityError",
    "ModelRef",
    "RegistryBackend",
    "RegistryError",
    "VersionInfo",
    "decode_record",
    "encode_record",
]

#: The newest version of a model; never stored (MLflow reserves the name, W&B maintains it itself).
LATEST = "latest"
#: Manifest keys stored with each version (the manifest's file list travels as ``sha256``).
RECORD_KEYS = (
    "class_path",
    "metrics",
    "monitor",
    "mode",
    "results",
    "run_name",
    "pipeline",
    "experiment",
    "run_dir",
    "checkpoint",
    "checkpoint_sha256",
    "git_commit",
    "dataset_hash",
    "sha256",
    "created",
)
TAG_PREFIX = "harvest."


@dataclass
class VersionInfo:
    """One registered version as a user sees it.

    Attributes:
        name: Registered model name.
        version: Version number as a string (``"3"``).
        aliases: Aliases pointing at this version (``latest`` included for the newest).
        record: What was recorded at registration (see :data:`RECORD_KEYS`).
        source: Where the backend keeps the files.

    """

    name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def metrics(self) -> dict[str, float]:
        """Metrics recorded for this version."""
        return dict(self.record.get("metrics") or {})

    @property
    def label(self) -> str:
        """``name:version``, how messages and tables name it."""
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ModelRef:
    """``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` as typed on the command line."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str, default_alias: str | None = None) -> ModelRef:
        """Parse a reference; a bare name means ``default_alias`` (the newest version when None)."""
        match = re.fullmatch(r"(?P<name>[^@:]+)(?::v?(?P<version>\d+)|@(?P<alias>[\w.-]+))?", text.strip())
        if not match:
            raise RegistryError(f"{text!r} is not a model reference: write NAME, NAME:VERSION or NAME@ALIAS.")
        alias = match["alias"] or (None if match["version"] else default_alias)
        return cls(match["name"], match["version"], alias)

    def __str__(self) -> str:
        return self.name + (f":{self.version}" if self.version else f"@{self.alias}" if self.alias else "")


def encode_record(record: dict[str, Any]) -> dict[str, str]:
    """Encode the record as string tags (``harvest.<key>``, JSON for non-strings) for string-only stores."""
    tags = {}
    for key in RECORD_KEYS:
        value = record.get(key)
        if value is not None:
            tags[TAG_PREFIX + key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return tags


def decode_record(tags: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`encode_record`; other tags are ignored."""
    record: dict[str, Any] = {}
    for key in RECORD_KEYS:
        value = tags.get(TAG_PREFIX + key)
        if value is None:
            continue
        try:
            record[key] = json.loads(value) if key in ("metrics", "results", "sha256") else value
        except json.JSONDecodeError:
            record[key] = value
    return record


class RegistryBackend(ABC):
    """Storage primitives of one registry service. Versions are strings; ``None`` means not found."""

    uri: str

    def check_available(self, action: str, retry: str | None = None) -> None:  # noqa: B027 - most stores need no check
        """Raise :class:`RegistryError` when the service cannot do ``action``, naming ``retry`` as fix."""

    @abstractmethod
    def create_version(self, name: str, package: Path, record: dict[str, Any]) -> VersionInfo:
        """Store ``package`` as a new version of ``name`` (created if new), all or nothing."""

    @abstractmethod
    def delete_version(self, name: str, version: str) -> None:
        """Remove a version (used to undo a registration whose aliases could not be set)."""

    @abstractmethod
    def model_names(self) -> list[str]:
        """Names of all registered models, sorted."""

    @abstractmethod
    def versions(self, name: str) -> list[VersionInfo]:
        """All versions of ``name``, oldest first (empty when the model does not exist)."""

    @abstractmethod
    def holder(self, name: str, alias: str) -> VersionInfo | None:
        """Return the version an alias points at, or None."""

    @abstractmethod
    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (moving it from its previous holder)."""

    @abstractmethod
    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias."""

    @abstractmethod
    def download(self, version: VersionInfo, dst: Path) -> Path:
        """Download the version's files under ``dst`` and return the package folder."""
