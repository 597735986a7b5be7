r"""``harvest monitor``: monitored predictions with a registered model.

    harvest monitor grocery-ssl-classifier@production                      # the test split, with accuracy
    harvest monitor grocery-ssl-classifier@production --images incoming/  # new images: drift from training
    harvest monitor fuji-maskrcnn@production --images orchard/ --reference runs/<monitor run>/monitoring_report.json

Drift is measured against the reference profile of the validation split that the training run
wrote and the registered version carries (``reference_profile.json``), or an earlier report given
with ``--reference``. The version comes from the local model cache (downloaded once per content,
every file checked against its SHA-256 before each use, :mod:`harvest.registry.cache`), then this runs
``harvest predict`` with the run's own resolved config, the verified weights and the
:class:`callbacks.inference_monitor.InferenceMonitor` callback. The monitoring run gets its own
run directory (``<pipeline>_monitor_<timestamp>``) and goes to the trackers of that config, so
``monitor/*`` metrics land beside the training runs in MLflow / TensorBoard / W&B. The data
module is built from that config: its data folder must exist here (it gives the class list and
the evaluation transform) unless ``--images`` points the prediction at another folder: then the
class list comes from the registered checkpoint and no data set is needed.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from pathlib import Path

import yaml

from harvest.commands.main import cli_main, split_passthrough
from harvest.monitoring.reference_profile import PROFILE
from harvest.registry.api import open_registry
from harvest.registry.cache import cached_package
from harvest.registry.package import MANIFEST, WEIGHTS, RegistryError, load_checkpoint

log = logging.getLogger(__name__)


def monitor_args(package: Path, run_name: str, args: argparse.Namespace, label: str = "") -> list[str]:
    """The ``harvest predict`` arguments that monitor the model in ``package`` (``label``: ``NAME:VERSION``)."""
    config = package / "config.yaml"
    if not config.is_file():
        raise RegistryError(f"{package}: the registered version has no config.yaml; register it from a run directory.")
    stored = yaml.safe_load(config.read_text()) or {}
    runs = Path(stored.get("trainer", {}).get("default_root_dir") or "runs/x").parent
    argv = [
        "predict",
        "--config",
        str(config),
        "--ckpt_path",
        str(package / WEIGHTS),
        "--weights_only",
        "true",
        "--return_predictions",
        "false",
        "--run_name",
        run_name,
        "--trainer.default_root_dir",
        str(runs),
        "--trainer.callbacks+",
        "InferenceMonitor",
        "--trainer.callbacks.log_every_n_batches",
        str(args.log_every),
    ]
    reference = args.reference or (str(package / PROFILE) if (package / PROFILE).is_file() else None)
    if reference:
        argv += ["--trainer.callbacks.reference", reference]
    else:
        log.warning("%s carries no %s (trained before profiles existed): no drift is measured.", args.model, PROFILE)
    argv += ["--trainer.callbacks.model", label, "--trainer.callbacks.input", args.images or "test split"]
    if args.images:  # new images: the class list comes with the model, the data set need not be here
        argv += ["--data.init_args.predict_root", args.images]
        hparams = load_checkpoint(package / WEIGHTS, mmap=True).get("hyper_parameters") or {}
        class_names = hparams.get("class_names")
        if class_names:
            argv += [f"--data.init_args.class_names={json.dumps(list(class_names))}"]
        if (stored.get("data", {}).get("init_args") or {}).get("synthetic") is not None:
            argv += ["--data.init_args.synthetic", "null"]  # a demo model: no demo data set to write here
    if args.limit_batches:
        argv += ["--trainer.limit_predict_batches", str(args.limit_batches)]
    return argv + list(args.extra)


def main(argv: list[str] | None = None) -> None:
    """``harvest monitor`` entry point."""
    parser = argparse.ArgumentParser(
        prog="harvest monitor", description=__doc__.splitlines()[0], epilog="Arguments after -- go to harvest predict."
    )
    parser.add_argument(
        "model", help="registered model as NAME, NAME:VERSION or NAME@ALIAS (default alias: production)"
    )
    parser.add_argument("--images", help="folder of images to predict (default: the data module's test split)")
    parser.add_argument(
        "--reference",
        help="reference_profile.json or monitoring_report.json to measure drift against "
        "(default: the profile of the validation split that the version carries)",
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="registry URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    parser.add_argument("--limit-batches", type=int, default=None, help="predict at most this many batches")
    parser.add_argument("--log-every", type=int, default=10, help="send running metrics every N batches")
    own, extra = split_passthrough(argv)
    args = parser.parse_args(own)
    args.extra = extra
    ref = args.model if ("@" in args.model or ":" in args.model) else f"{args.model}@production"
    name = ref.split("@")[0].split(":")[0]
    run_name = f"{name}_monitor_{datetime.now():%Y%m%d_%H%M%S}"
    try:
        info, package, downloaded = cached_package(open_registry(args.tracking_uri), ref)
    except RegistryError as error:
        parser.exit(2, f"harvest monitor: {error}\n")
    log.info(
        "monitoring %s = %s (%s %s)", ref, info.label, "downloaded" if downloaded else "cached", package / MANIFEST
    )
    cli_main(monitor_args(package, run_name, args, info.label))
