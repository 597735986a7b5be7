"""Read a W&B run's ``.wandb`` file back from disk, as W&B's own protobuf ``Record`` messages.

wandb 0.31 has no Python reader for its transaction log, so this follows its documented framing
(a LevelDB-style log: a 7-byte ``:W&B`` header, then 32 KiB blocks of records, each with a 7-byte
header of CRC-32, length and type, long records split FIRST/MIDDLE/LAST) and decodes each payload
with ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """Every record of the ``.wandb`` file at ``path``, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if kind == 0 and length == 0:
            position += left
            continue
        if position + HEADER + length > len(data):
            return  # a record still being written
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


class OfflineRun:
    """What a finished W&B run directory holds: run record, config, history rows and logged artifacts.

    History rows are flat: ``{"val/loss": 0.3, "dataset/samples/_type": "images/separated", ...}``.

    Args:
        run_folder: The ``offline-run-*`` (or ``run-*``) folder.
        timeout: Seconds to wait for the run's exit record: W&B's service process may still be
            writing the log for a moment after ``finish()`` returned.
    """

    def __init__(self, run_folder: Path, timeout: float = 30.0) -> None:
        (self.file,) = Path(run_folder).glob("run-*.wandb")
        deadline = time.monotonic() + timeout
        while not any(r.WhichOneof("record_type") == "exit" for r in records(self.file)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.file}: no exit record after {timeout} s; the run did not finish")
            time.sleep(0.2)
        self.run: Any = None
        self.config: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.artifacts: list[Any] = []
        for record in records(self.file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.run = record.run
                self._update(record.run.config)
            elif kind == "config":
                self._update(record.config)
            elif kind == "history":
                self.history.append(
                    {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                )
            elif kind == "artifact":
                self.artifacts.append(record.artifact)

    def _update(self, config: Any) -> None:
        for item in config.update:
            keys = list(item.nested_key) or [item.key]
            target = self.config
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = json.loads(item.value_json)

    def metric(self, name: str) -> list[Any]:
        """Every logged value of ``name`` in history order."""
        return [row[name] for row in self.history if name in row]

    def artifacts_of(self, kind: str) -> list[Any]:
        """Logged artifacts of type ``kind`` (``dataset``, ``model``...)."""
        return [a for a in self.artifacts if a.type == kind]
