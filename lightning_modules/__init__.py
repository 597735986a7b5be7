"""LightningModules of the two pipelines, thin around torch models built by factories."""

from lightning_modules.mask_rcnn import MaskRCNNModule
from lightning_modules.ssl_classifier import SemiSupervisedClassifier

__all__ = ["MaskRCNNModule", "SemiSupervisedClassifier"]
