"""The model registry: backends (MLflow, W&B), verified packages, the local cache, the pyfunc model."""
