"""Harvest's foundations, importing nothing of the project: errors, image decoding, optional imports, precision."""
