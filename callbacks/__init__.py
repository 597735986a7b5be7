"""Lightning callbacks: every side effect that depends on a logger, a file or a service."""

from callbacks.checkpoint_artifacts import CheckpointArtifacts
from callbacks.config_saver import RunConfigSaver
from callbacks.confusion_matrix import ConfusionMatrix
from callbacks.dataset_card import DatasetCard
from callbacks.inference_monitor import InferenceMonitor
from callbacks.lr_monitor import LearningRateLogger
from callbacks.mlflow_tracking import MLflowTracking
from callbacks.model_registry_upload import ModelRegistryUpload
from callbacks.optuna_pruning import OptunaPruning
from callbacks.prediction_images import PredictionImages
from callbacks.prediction_writer import PredictionWriter
from callbacks.reference_profile import ReferenceProfile
from callbacks.run_checkpoint import RunCheckpoint
from callbacks.run_report import RunReport
from callbacks.ssl_stage import SSLStage
from callbacks.tensorboard_tracking import TensorBoardTracking
from callbacks.training_summary import TrainingSummary
from callbacks.wandb_tracking import WandbTracking

__all__ = [
    "CheckpointArtifacts",
    "ConfusionMatrix",
    "DatasetCard",
    "InferenceMonitor",
    "LearningRateLogger",
    "MLflowTracking",
    "ModelRegistryUpload",
    "OptunaPruning",
    "PredictionImages",
    "PredictionWriter",
    "ReferenceProfile",
    "RunCheckpoint",
    "RunConfigSaver",
    "RunReport",
    "SSLStage",
    "TensorBoardTracking",
    "TrainingSummary",
    "WandbTracking",
]
