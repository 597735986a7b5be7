"""Optional packages, checked in one place.

Every package that a Harvest feature needs but a plain install may lack is named here once, with
the extra that installs it. Packages ``pyproject.toml`` makes hard dependencies (MLflow, W&B,
pycocotools, faster-coco-eval) are not checked: an install without them is broken anyway.
Code that needs an optional one calls :func:`require` and gets a one-line error naming the fix
instead of an ``ImportError`` from deep inside a run.
"""

from __future__ import annotations

from lightning_utilities.core.imports import RequirementCache

# name -> (requirement, how to install it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "optuna": ("optuna>=3.6", "pip install 'harvest-mlops[sweeps]'"),
    "jsonschema": ("jsonschema>=4.18", "pip install 'harvest-mlops[sweeps]'"),
    "onnxruntime": ("onnxruntime>=1.20", "pip install 'harvest-mlops[export]'"),
}

_CACHE: dict[str, RequirementCache] = {}


def available(name: str) -> bool:
    """Whether the optional package ``name`` (a key of :data:`OPTIONAL`) can be imported."""
    if name not in _CACHE:
        requirement, _ = OPTIONAL[name]
        _CACHE[name] = RequirementCache(requirement, module=name)
    return bool(_CACHE[name])


def require(name: str, feature: str) -> None:
    """Raise a one-line ``ModuleNotFoundError`` naming the install command when ``name`` is missing.

    Args:
        name: Key of :data:`OPTIONAL`.
        feature: What the user asked for, e.g. ``"harvest sweep"``.
    """
    if not available(name):
        requirement, fix = OPTIONAL[name]
        raise ModuleNotFoundError(f"{feature} needs {requirement}, which is not installed: run `{fix}`.")
