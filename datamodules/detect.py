"""Which pipeline a data folder belongs to, from its layout alone (for ``harvest data check FOLDER``)."""

from __future__ import annotations

from pathlib import Path

from datamodules.fuji_layout import find_layout
from datamodules.image_folder import class_folders

FUJI = "datamodules.FujiApplesDataModule"
GROCERIES = "datamodules.GroceriesDataModule"


def detect_pipeline(root: Path) -> str:
    """The data module's class path for ``root``: instance segmentation (any layout Fuji reads) or groceries.

    Raises:
        FileNotFoundError: ``root`` is missing or matches neither; the message lists what was looked for.

    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist: give the folder that holds the data set.")
    try:
        find_layout(root)
        return FUJI
    except FileNotFoundError as fuji:
        if (root / "train").is_dir() and class_folders(root / "train"):
            return GROCERIES
        looked_for = str(fuji).partition("(looked for ")[2].partition("):")[0]
        raise FileNotFoundError(
            f"{root}: no data set layout found; looked for {looked_for} (instance segmentation) and "
            f"{root}/train/<class>/*.jpg (image classification): point at the data set's root folder, or "
            "give its config with --config."
        ) from None
