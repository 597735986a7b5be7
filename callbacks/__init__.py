"""Lightning callbacks: every side effect that depends on a logger, a file or a service."""

from callbacks.config_saver import RunConfigSaver
from callbacks.model_registry_upload import ModelRegistryUpload
from callbacks.run_report import RunReport
from callbacks.training_summary import TrainingSummary

__all__ = ["ModelRegistryUpload", "RunConfigSaver", "RunReport", "TrainingSummary"]
