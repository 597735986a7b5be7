"""Run a sweep with Optuna: sampler, W&B Hyperband as Optuna's pruner, shared storage, one line per trial."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from callbacks.optuna_pruning import OptunaPruning
from callbacks.sweep_group import SweepGroup
from harvest.core.imports import require
from harvest.sweeps.keys import full_key, override_keys
from harvest.sweeps.space import SweepConfigError, SweepSpec
from harvest.sweeps.trial import TrialRun, run_trial

log = logging.getLogger(__name__)


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``--storage``.

    ``None`` keeps the study in memory; an RDB URL (``sqlite:///``, ``postgresql://``, ``mysql://``)
    is Optuna's RDB storage; anything else is the path of a journal file (Optuna's ``JournalStorage``,
    for workers on several machines that share a file system).
    """
    if url is None:
        return None
    import optuna

    if "://" in url:
        return _rdb_storage(url)
    from optuna.storages.journal import JournalFileBackend

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


def _rdb_storage(url: str, attempts: int = 6) -> Any:
    """Optuna's RDB storage; a worker that starts while another one creates the schema waits and retries."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except SQLAlchemyError:  # e.g. both workers stamping the schema version of a new SQLite file
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _max_epochs(spec: SweepSpec, config: Namespace) -> int | None:
    swept = next((p for p in spec.parameters if p.key == "trainer.max_epochs"), None)
    if swept is not None:
        choices = swept.choices
        return int(max(choices)) if choices else int(swept.spec.get("max", 0)) or None
    value = config.get("trainer.max_epochs")
    return int(value) if value and value > 0 else None


def hyperband(spec: SweepSpec, config: Namespace) -> Any:
    """W&B's ``early_terminate: {type: hyperband, min_iter | max_iter + s, eta}`` as Optuna's ``HyperbandPruner``.

    One iteration is one epoch (the swept metric is reported after each validation epoch).
    ``min_iter`` is the first rung; ``max_iter`` and ``s`` give it as ``max_iter / eta**s``;
    the largest resource is ``max_iter``, else the trials' ``trainer.max_epochs``.
    """
    import optuna

    early = spec.early_terminate
    if not early:
        return optuna.pruners.NopPruner()
    eta = early.get("eta", 3)
    if eta != int(eta):
        raise SweepConfigError(f"{spec.path}: early_terminate.eta {eta} must be a whole number for Optuna's Hyperband")
    if "strict" in early:
        log.info("%s: early_terminate.strict is W&B's own; Optuna's Hyperband has no such option.", spec.path)
    epochs = _max_epochs(spec, config)
    if "min_iter" in early:
        min_resource = int(early["min_iter"])
    else:
        min_resource = max(1, int(round(early["max_iter"] / eta ** early["s"])))
    max_resource = int(early["max_iter"]) if "max_iter" in early else (epochs or "auto")
    if epochs is not None and min_resource >= epochs:
        log.warning(
            "%s: Hyperband's first rung is epoch %d but trials train %d epoch(s): no trial can be stopped early; "
            "lower early_terminate.min_iter or train longer (trainer.max_epochs).",
            spec.path,
            min_resource,
            epochs,
        )
    log.info(
        "Hyperband: rungs from epoch %d, eta %s, up to %s epochs (Optuna HyperbandPruner).",
        min_resource,
        eta,
        max_resource,
    )
    return optuna.pruners.HyperbandPruner(
        min_resource=min_resource, max_resource=max_resource, reduction_factor=int(eta)
    )


def sampler(spec: SweepSpec, seed: int | None) -> Any:
    """Optuna's sampler for W&B's ``method``; a random search over a finite space never repeats a configuration."""
    import optuna

    if spec.method == "grid":
        space = {p.name: p.choices for p in spec.parameters}
        return optuna.samplers.GridSampler(space, seed=seed)
    if spec.method == "random":
        if all(p.choices is not None for p in spec.parameters):
            with warnings.catch_warnings():  # "experimental" since Optuna 3.1; the interface is one argument
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.BruteForceSampler(seed=seed)  # random order, each configuration once
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _space_size(spec: SweepSpec) -> float:
    return math.prod(len(p.choices) if p.choices is not None else math.inf for p in spec.parameters)


def _progress(spec: SweepSpec, total: int) -> Any:
    def report(study: Any, trial: Any) -> None:
        if trial.user_attrs.get("surplus"):
            return
        values = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in trial.params.items())
        if trial.state.name == "PRUNED":
            pruned = trial.user_attrs.get("pruned") or {}
            outcome = f"pruned after epoch {pruned.get('epoch')} ({spec.metric}={_short(pruned.get('value'))})"
        elif trial.state.name == "COMPLETE":
            same = trial.user_attrs.get("same_as")
            outcome = f"{spec.metric}={_short(trial.value)}"
            outcome += f" (same values as trial {same}: not run again)" if same is not None else ""
        else:
            outcome = trial.state.name.lower()
        log.info("sweep %s trial %d (of %d): %s -> %s", study.study_name, trial.number, total, values, outcome)

    return report


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_optuna(
    spec: SweepSpec,
    config: Namespace,
    configs: list[str],
    extra: list[str],
    trials: int,
    study_name: str,
    storage: str | None,
    seed: int | None,
    after_trial: Callable[[Any], None] | None = None,
) -> Any:
    """Run (this worker's share of) the study: until it holds ``trials`` trials, all workers together.

    ``after_trial(study)`` is called after each of this worker's trials (the sweep writes its results).

    Returns:
        The study.
    """
    require("optuna", "harvest sweep")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage),
        sampler=sampler(spec, seed),
        pruner=hyperband(spec, config),
        direction=spec.direction,
        load_if_exists=True,
    )
    keys = [p.key for p in spec.parameters] + [full_key(k, config) for k in override_keys(extra)]
    runs: dict[str, TrialRun] = {}

    def objective(trial: Any) -> float:
        names = {p.name: p.suggest(trial) for p in spec.parameters}  # first: a trial without params breaks
        if trial.number >= trials:  # BruteForceSampler in the other workers; another worker took the last trial
            trial.set_user_attr("surplus", True)
            study.stop()
            raise optuna.TrialPruned("the study has all its trials")
        same = _same_as(study, trial)
        if same is not None:
            trial.set_user_attr("same_as", same.number)
            for key in ("run_name", "effective"):
                trial.set_user_attr(key, same.user_attrs.get(key))
            return float(same.value)
        run_name = f"{study_name}_trial{trial.number:03d}"
        trial.set_user_attr("run_name", run_name)
        pruning = OptunaPruning(trial, spec.metric)
        callbacks = [SweepGroup(study_name, trial.number), pruning]
        try:
            run = run_trial(configs, spec.values_by_key(names), extra, run_name, callbacks, keys, runs)
        except optuna.TrialPruned:
            trial.set_user_attr("pruned", pruning.pruned)
            raise
        finally:
            _record(trial, runs.get(run_name))
        value = run.metrics.get(spec.metric)
        if value is None:
            raise SweepConfigError(
                f"{spec.path}: metric.name {spec.metric!r} was not logged by run {run_name}; "
                f"logged metrics are: {', '.join(sorted(run.metrics)) or 'none'}"
            )
        return float(value)

    if _space_size(spec) < trials and spec.method != "bayes":
        log.info("%s: %d distinct configurations for %d trials: each runs once.", spec.path, _space_size(spec), trials)
    study.optimize(
        objective,
        n_trials=trials,
        callbacks=[
            _progress(spec, trials),
            optuna.study.MaxTrialsCallback(trials, states=None),
            *([lambda study, _: after_trial(study)] if after_trial else []),
        ],
    )
    return study


def _record(trial: Any, run: TrialRun | None) -> None:
    if run is not None:
        trial.set_user_attr("run_dir", str(run.run_dir))
        trial.set_user_attr("effective", run.effective)
        trial.set_user_attr("registry_uri", run.registry_uri)


def _same_as(study: Any, trial: Any) -> Any:
    """A finished trial of the study with exactly this trial's values, if any (TPE may propose one again)."""
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.number != trial.number and other.params == trial.params and other.value is not None:
            return other
    return None
