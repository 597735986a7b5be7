"""A local cache of registered packages, keyed by the SHA-256 of their content.

``harvest registry predict`` and ``harvest monitor`` call a model again and again; the cache
downloads each version once into ``$HARVEST_MODEL_CACHE`` (default ``~/.cache/harvest/models``,
or ``$XDG_CACHE_HOME/harvest/models``) under a key derived from the SHA-256 of every file the
registry recorded, and re-checks those digests before each reuse. A changed cached file is
refused like a changed registered one and downloaded afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from harvest.registry.api import Registry, VersionInfo
from harvest.registry.package import IntegrityError, verify_package

log = logging.getLogger(__name__)

CACHE_ENV = "HARVEST_MODEL_CACHE"
_PACKAGE_LINK = "package_path.txt"


def cache_root() -> Path:
    """Where packages are cached (``$HARVEST_MODEL_CACHE``, else the user's cache folder)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "harvest" / "models"


def content_key(info: VersionInfo) -> str:
    """SHA-256 over the recorded per-file digests: equal for equal packages, whatever their name."""
    recorded = info.record.get("sha256") or {}
    return hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()


def cached_package(registry: Registry, ref: str) -> tuple[VersionInfo, Path, bool]:
    """Resolve ``ref`` and return its verified package folder, downloading it only when not cached.

    Returns:
        The version, its package folder, and whether it was downloaded by this call.

    """
    info = registry.resolve(ref)
    where = f"{ref} ({info.label})"
    folder = cache_root() / content_key(info)
    link = folder / _PACKAGE_LINK
    if link.is_file():
        package = folder / link.read_text().strip()
        try:
            verify_package(package, info.record.get("sha256") or {}, where)
            return info, package, False
        except IntegrityError as err:
            log.warning("cached copy of %s is damaged (%s): downloading it again.", where, err)
            shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder.parent))
    try:
        package = registry.download(info.label, staging)
        (staging / _PACKAGE_LINK).write_text(package.relative_to(staging).as_posix())
        try:
            staging.rename(folder)  # atomic: a concurrent call that won the race leaves its copy
        except OSError:
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    package = folder / (folder / _PACKAGE_LINK).read_text().strip()
    log.info("downloaded %s into the model cache %s", where, folder)
    return info, package, True
