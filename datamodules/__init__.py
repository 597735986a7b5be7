"""LightningDataModules of the two pipelines and writers of synthetic data in their on-disk layouts."""

from datamodules.fuji_apples import FujiApplesDataModule
from datamodules.groceries import GroceriesDataModule

__all__ = ["FujiApplesDataModule", "GroceriesDataModule"]
