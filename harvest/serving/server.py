"""``harvest registry serve``: MLflow's scoring server for a registered version, in this environment.

``mlflow models serve --env-manager local`` starts ``uvicorn`` by looking it up on ``PATH``, so
``.venv/bin/mlflow models serve`` fails with ``uvicorn: not found`` unless the virtual environment
is activated. This command serves the cached, SHA-256-checked copy of the version (no download
per start) with this interpreter's ``bin`` folder first on ``PATH``, so it works from any shell.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harvest.core.console import console
from harvest.registry.api import Registry
from harvest.registry.cache import cached_package


def serve_command(model_dir: Path, host: str, port: int, workers: int = 1) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow models serve`` command line for ``model_dir`` and its environment (PATH fixed)."""
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
        "-h", host, "-p", str(port), "-w", str(workers),
    ]  # fmt: skip
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return command, env


def serve(registry: Registry, ref: str, host: str, port: int, workers: int = 1) -> int:
    """Replace this process by MLflow's scoring server for ``ref`` (returns only if that cannot start)."""
    _, package, _ = cached_package(registry, ref)
    command, env = serve_command(package.parents[1], host, port, workers)  # <model>/artifacts/package
    console(stderr=True).print(f"Serving {ref} on http://{host}:{port}/invocations ({package.parents[1]})")
    os.execve(sys.executable, command, env)
    return 1
