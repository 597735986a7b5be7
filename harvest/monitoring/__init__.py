"""Inference monitoring and data versioning: prediction statistics, drift, reference profiles, data set cards."""
