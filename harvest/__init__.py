"""Harvest: a PyTorch Lightning training stack for agricultural and retail vision."""

__version__ = "0.1.0"
