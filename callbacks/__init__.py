"""Lightning callbacks: every side effect that depends on a logger, a file or a service."""

from callbacks.config_saver import RunConfigSaver
from callbacks.run_report import RunReport
from callbacks.training_summary import TrainingSummary

__all__ = ["RunConfigSaver", "RunReport", "TrainingSummary"]
