"""MLflow: the resolved config as params, pipeline and git tags, the run's files as artifacts.

A tracking server that dies mid-run does not stop training (see :class:`MLflowTracking`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import harvest
from callbacks.stage_start import StageStartCallback
from harvest.core.errors import INTERRUPTIONS, first_line
from harvest.runs import directory as rd
from harvest.runs.directory import run_dir
from harvest.tracking.context import git_info, loggers_of, pipeline, run_config, server_problem, tracked_params

log = logging.getLogger(__name__)


def tracker_errors() -> tuple[type[BaseException], ...]:
    """Errors of an MLflow call against a store that cannot be reached or written (MLflow imported lazily)."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    return (MlflowException, RequestException, OSError)


def tracking_uri(logger: MLFlowLogger) -> str:
    """The logger's tracking URI, read without contacting the store."""
    return str(getattr(logger, "_tracking_uri", "") or "")


#: MLflow's HTTP retry defaults for a run (an environment setting wins): MLflow's own (7 retries,
#: backoff factor 2) keep a request to a server that died mid-run retrying for about 4 minutes, and
#: the process waits for it at exit; with these it gives up within seconds.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class MLflowTracking(StageStartCallback):
    """Complete what ``MLFlowLogger`` sends; a no-op without one.

    When a stage starts: the tunable part of the resolved config (``tracked_params``) as params (values
    cut at MLflow's length limit) and the tags ``pipeline``, ``git_commit``, ``git_dirty``,
    ``mlflow.source.git.commit``, ``run_dir`` and ``harvest_version``; ``config.yaml`` as an artifact.
    At the end of every stage: the ``artifacts`` (files again; folders only for files not there yet,
    e.g. the plots other callbacks already sent). Metrics stay with the logger; configure it with
    ``synchronous: false`` so the training loop never waits on the server.

    The run's MLflow run id is kept in ``<run dir>/run.json``: ``harvest fit --ckpt_path last`` of
    the run continues that MLflow run (RUNNING again) instead of opening a second one. A run stopped
    by a signal (:class:`harvest.core.errors.RunInterrupted`) ends KILLED. ``validate``/``test`` of a run's
    checkpoint are child runs of it (``mlflow.parentRunId``) tagged ``harvest.stage`` and
    ``harvest.training_run``; a rerun of a saved config is tagged ``harvest.origin_run``.

    A server that stops answering mid-run (checked at every epoch end and before uploads) does not
    stop training: the logger is detached with one warning and the run finishes locally (checkpoints,
    ``training_summary.json``, TensorBoard). A server unreachable at start stops the run before any
    training, with one line saying how to fix it; through ``harvest`` it is found in seconds by
    :meth:`preflight`, before MLflow's own requests retry for minutes.

    Args:
        log_params: Send the resolved config as params.
        artifacts: Files and folders of the run directory to upload at the end of each stage.
        health_timeout: Seconds to wait for the server's ``/health`` answer.
        buffer_seconds: Default of ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS`` (an environment setting
            wins): MLflow's asynchronous queue then writes one merged batch every few seconds
            instead of one database transaction or HTTP request per ``log_metrics``, which took ~8%
            of a CPU demo step with ``log_every_n_steps: 1`` (see ``benchmarks/RESULTS.md``). ``None``
            leaves MLflow's default.

    """

    def __init__(
        self,
        log_params: bool = True,
        artifacts: Sequence[str] = ("config.yaml", "training_summary.json", "plots"),
        health_timeout: float = 5.0,
        buffer_seconds: int | None = 2,
    ) -> None:
        self.log_params = log_params
        self.artifacts = list(artifacts)
        self.health_timeout = health_timeout
        self.buffer_seconds = buffer_seconds
        self._started: set[str] = set()
        self._resumed: set[str] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.buffer_seconds and loggers_of(trainer, MLFlowLogger):
            os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", str(self.buffer_seconds))
        if loggers_of(trainer, MLFlowLogger):
            for name, value in HTTP_RETRY_DEFAULTS.items():
                os.environ.setdefault(name, value)

    def preflight(self, trainer: pl.Trainer) -> None:
        """Fail in seconds, before anything runs, when a tracking server is down (``HarvestCLI`` calls it).

        Lightning's first MLflow request comes before any callback hook, and MLflow retries an
        unreachable server for minutes before it gives up. A fit in a run directory that already has
        an MLflow run (a resume) is pointed at that run here, before Lightning opens one.
        """
        for logger in loggers_of(trainer, MLFlowLogger):
            uri = tracking_uri(logger)
            problem = server_problem(uri, self.health_timeout)
            if problem:
                raise RuntimeError(
                    f"MLflow tracking server {uri} cannot be reached ({problem}): nothing was run. Start it "
                    "(mlflow server --host 127.0.0.1 --port <port>), set trainer.logger's tracking_uri to a "
                    "reachable one, or leave MLflow out (--config configs/loggers/tensorboard.yaml)."
                )
        previous = rd.run_record(run_dir(trainer)).get("mlflow_run_id")
        if previous and trainer.state.fn == "fit" and trainer.is_global_zero:
            for logger in loggers_of(trainer, MLFlowLogger):
                if logger._run_id is None:
                    self._continue(logger, previous)

    def _continue(self, logger: MLFlowLogger, run_id: str) -> None:
        """Log into the MLflow run this run directory had before (a resume), marked RUNNING again."""
        from mlflow.exceptions import MlflowException

        client = logger._mlflow_client
        try:
            client.get_run(run_id)
        except MlflowException:
            log.warning(
                "MLflow run %s of this run directory is not in %s: a new MLflow run is opened.",
                run_id,
                tracking_uri(logger),
            )
            return
        client.update_run(run_id, status="RUNNING")
        logger._run_id = run_id
        self._resumed.add(run_id)

    # ------------------------------------------------------------------ start
    @rank_zero_only
    def stage_started(self, trainer: pl.Trainer) -> None:
        for logger in loggers_of(trainer, MLFlowLogger):
            if logger.run_id in self._started:
                continue
            self._started.add(logger.run_id)
            self._guard(trainer, logger, "start", lambda lg=logger: self._send_start(trainer, lg))

    def _send_start(self, trainer: pl.Trainer, logger: MLFlowLogger) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        git, folder = git_info(), run_dir(trainer)
        rd.update_run_record(folder, mlflow_run_id=logger.run_id)
        training = rd.training_run_of(folder) if rd.is_stage_dir(folder) else None
        tags = {
            "pipeline": pipeline(trainer),
            "git_commit": git.get("commit"),
            "git_dirty": git.get("dirty"),
            "mlflow.source.git.commit": git.get("commit"),
            "run_dir": str(folder.resolve()),
            "harvest_version": harvest.__version__,
            "harvest.stage": trainer.state.fn.value if trainer.state.fn else None,
            "harvest.origin_run": rd.run_record(folder).get("origin_run"),
            "harvest.training_run": training.name if training else None,
            "mlflow.parentRunId": rd.run_record(training).get("mlflow_run_id") if training else None,
        }
        client = logger.experiment
        client.log_batch(
            logger.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items() if v], synchronous=False
        )
        config = run_config(trainer)
        if self.log_params and config and logger.run_id not in self._resumed:  # a resumed run has them
            params = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in tracked_params(config).items()]
            for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
                client.log_batch(
                    logger.run_id, params=params[i : i + MAX_PARAMS_TAGS_PER_BATCH], synchronous=False
                )
        if "config.yaml" in self.artifacts and (run_dir(trainer) / "config.yaml").is_file():
            client.log_artifact(logger.run_id, str(run_dir(trainer) / "config.yaml"))

    # ------------------------------------------------------------------ during and after
    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in loggers_of(trainer, MLFlowLogger):
            problem = server_problem(tracking_uri(logger), self.health_timeout)
            if problem:
                self._detach(trainer, logger, f"after epoch {trainer.current_epoch}", problem)

    @rank_zero_only
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in loggers_of(trainer, MLFlowLogger):
            problem = server_problem(tracking_uri(logger), self.health_timeout)
            if problem:
                self._detach(trainer, logger, f"at the end of {stage}", problem)
            else:
                self._guard(
                    trainer, logger, f"the end of {stage}", lambda lg=logger: self._upload(trainer, lg)
                )

    @rank_zero_only
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        for logger in loggers_of(trainer, MLFlowLogger):
            if logger._run_id is not None and isinstance(exception, INTERRUPTIONS):
                self._guard(trainer, logger, "the interrupted run's end", lambda lg=logger: self._upload(trainer, lg))
                self._guard(trainer, logger, "the interrupted run's end", lambda lg=logger: _end_killed(lg))
            elif logger._run_id is None and isinstance(exception, tracker_errors()):
                uri = tracking_uri(logger)
                log.error(
                    "MLflow tracking store %s cannot be reached (%s): the run stopped before training, "
                    "nothing is lost. Start the server (mlflow server --host 127.0.0.1 --port <port>), set "
                    "trainer.logger's tracking_uri to a reachable one, or leave MLflow out "
                    "(--config configs/loggers/tensorboard.yaml).",
                    uri,
                    server_problem(uri, self.health_timeout) or first_line(exception, limit=200),
                )
            elif logger._run_id is not None and not server_problem(tracking_uri(logger), self.health_timeout):
                self._guard(
                    trainer, logger, "the failed run's end", lambda lg=logger: self._upload(trainer, lg)
                )

    def _upload(self, trainer: pl.Trainer, logger: MLFlowLogger) -> None:
        client, folder = logger.experiment, run_dir(trainer)
        for name in self.artifacts:
            path = folder / name
            if path.is_file():
                client.log_artifact(logger.run_id, str(path))
            elif path.is_dir():
                present = _remote_files(client, logger.run_id, name)
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    relative = file.relative_to(folder).as_posix()
                    if relative not in present:
                        client.log_artifact(logger.run_id, str(file), Path(relative).parent.as_posix())

    # ------------------------------------------------------------------ failure handling
    def _guard(self, trainer: pl.Trainer, logger: MLFlowLogger, when: str, call: Callable[[], None]) -> None:
        """Run ``call``: detach the logger if its store is gone, only warn if the store refused a write."""
        try:
            call()
        except tracker_errors() as error:
            answered = not server_problem(tracking_uri(logger), self.health_timeout)
            if answered and isinstance(error, _mlflow_error()):  # e.g. a resumed run whose params differ
                log.warning("MLflow refused a write at %s: %s", when, first_line(error))
            else:
                self._detach(trainer, logger, f"at {when}", first_line(error))

    @staticmethod
    def _detach(trainer: pl.Trainer, logger: MLFlowLogger, when: str, problem: str) -> None:
        trainer.loggers = [lg for lg in trainer.loggers if lg is not logger]
        log.warning(
            "MLflow tracking store %s failed %s (%s): training goes on without MLflow; checkpoints, "
            "training_summary.json and the other loggers are complete in %s; MLflow run %s keeps what it "
            "got before.",
            tracking_uri(logger),
            when,
            problem,
            run_dir(trainer),
            logger._run_id,
        )


def _end_killed(logger: MLFlowLogger) -> None:
    """End the logger's MLflow run as KILLED; Lightning's own ``finalize("failed")`` that follows does nothing."""
    logger.finalize("KILLED")
    logger._initialized = False


def _mlflow_error() -> type[BaseException]:
    from mlflow.exceptions import MlflowException

    return MlflowException


def _remote_files(client: object, run_id: str, folder: str) -> set[str]:
    """Paths of the files already uploaded under ``folder`` of the run's artifacts (recursively)."""
    found: set[str] = set()
    pending = [folder]
    while pending:
        for info in client.list_artifacts(run_id, pending.pop()):  # type: ignore[attr-defined]
            if info.is_dir:
                pending.append(info.path)
            else:
                found.add(info.path)
    return found

