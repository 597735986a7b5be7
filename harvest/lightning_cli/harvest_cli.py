"""``HarvestCLI``: the LightningCLI behind ``harvest fit|validate|test|predict``.

``harvest fit|validate|test|predict --config …`` are Lightning's, with model and data in subclass
mode, ``data.num_classes`` / ``data.class_names`` linked into the model, the run laid out in one
directory and autocast precisions falling back to ``32-true`` where the machine cannot run them fast.
``harvest registry|data|sweep|monitor|runs …`` are Harvest's tools (see ``harvest <tool> --help``).
"""

from __future__ import annotations

import importlib
import os
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.trainer.states import TrainerFn

from callbacks.config_saver import RunConfigSaver
from harvest.core.errors import config_error_line
from harvest.lightning_cli.run_setup import (
    apply_run_layout,
    chose_run_dir,
    drop_progress_bars,
    prepare_run_dir,
    resolve_precision,
)
from harvest.runs import directory as rd
from harvest.tracking.context import git_info

#: Modules imported so that short class names (``--model SemiSupervisedClassifier``) resolve.
_COMPONENT_MODULES = ("lightning_modules", "datamodules", "callbacks")


class HarvestArgumentParser(LightningArgumentParser):
    """Config mistakes as one line naming the key, the value and the closest valid key, then a usage hint."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:  # noqa: D102
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG") or os.environ.get("HARVEST_DEBUG"):
            super().error(message, ex)  # raises (inner parsers, debugging) or prints jsonargparse's report
        parser = getattr(ex, "subcommand_parser", None) or self
        options = [o.lstrip("-") for a in parser._actions for o in a.option_strings if o.startswith("--")]
        command = parser.prog.replace("[options] ", "").split(" ", 1)[-1] if " " in parser.prog else ""
        sys.stderr.write(
            f"harvest: error: {config_error_line(message, options)}\n"
            f"  (`{f'harvest {command}'.strip()} --help` lists every option; HARVEST_DEBUG=1 shows the full report)\n"
        )
        sys.exit(2)


class HarvestCLI(LightningCLI):
    """LightningCLI with Harvest's run layout, argument links and precision fallback."""

    run_dir: Path | None = None
    #: The config as ``config.yaml`` stores it: no directory pinned, ``origin_run`` naming this run.
    saved_config: Any = None

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        for module in _COMPONENT_MODULES:
            importlib.import_module(module)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_class", HarvestArgumentParser)
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {})
        kwargs["parser_kwargs"].setdefault(
            "description", "Harvest: train, track, register and monitor vision models with Lightning."
        )
        try:
            super().__init__(args=args, run=run, **kwargs)
        except BaseException:
            if self.run_dir is not None and rd.launcher_rank() == 0:
                rd.remove_if_empty(self.run_dir)  # a command that failed before writing leaves no run behind
            raise

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Run name used for the run directory and in every tracker (default: <pipeline>_<YYYYmmdd_HHMMSS>; "
            "an existing run is refused unless --ckpt_path resumes it or --overwrite true).",
        )
        parser.add_argument(
            "--overwrite", type=bool, default=False, help="Delete an existing run of the same --run_name first."
        )
        parser.add_argument(
            "--origin_run",
            type=str | None,
            default=None,
            help="The run whose config.yaml this is (written into every saved config; a rerun records it).",
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters right after parsing (and takes its model
        # class): check the file first, so a bad one fails naming its path and what is wrong with it.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and str(ckpt_path) not in ("last", "best", "hpc"):
            model = self.config[subcommand].get("model")
            problem = rd.checkpoint_problem(ckpt_path, getattr(model, "class_path", None))
            if problem:
                raise ValueError(problem)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        pipeline = rd.pipeline_name(config.get("data"))
        check_one_optimizer(config)
        drop_progress_bars(config.trainer)
        saved = deepcopy(config)
        self.run_dir = prepare_run_dir(self.subcommand or "fit", config, pipeline)
        config.run_name = self.run_dir.name
        apply_run_layout(config.trainer, self.run_dir, pipeline)
        resolve_precision(config.trainer)
        saved.run_name, saved.overwrite, saved.origin_run = None, False, rd.tracker_run_name(self.run_dir)
        if self.subcommand == "fit":
            saved.ckpt_path = None  # rerunning the config starts a new run; resuming names the run
        self.saved_config = saved
        if chose_run_dir():
            record = {"origin_run": config.origin_run} if config.get("origin_run") else {}
            if self.subcommand == "fit":
                record["git"] = git_info()  # the code that trains; the registry copies it
            rd.update_run_record(self.run_dir, **record)

    def preflight(self) -> None:
        """Let callbacks check the services they need before anything runs (their ``preflight(trainer)``).

        ``trainer.state.fn`` already names the stage then (Lightning sets it again when the stage starts);
        a CLI built with ``run=False`` (a sweep trial) is about to fit.
        """
        self.trainer.state.fn = TrainerFn(self.subcommand or "fit")
        for callback in self.trainer.callbacks:
            check = getattr(callback, "preflight", None)
            if callable(check):
                check(self.trainer)

    before_fit = before_validate = before_test = before_predict = preflight

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:
            # jsonargparse wraps a component's own error (a missing data folder…) in a Union-subtypes message
            if error.__cause__ is not None and "Does not validate against any of the Union subtypes" in str(error):
                raise error.__cause__ from None
            raise
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunConfigSaver) and self.saved_config is not None:
                callback.config = self.saved_config
        if self.subcommand == "predict" and not any(
            getattr(callback, "logs_during_predict", False) for callback in self.trainer.callbacks
        ):
            self.trainer.loggers = []  # nothing would be logged: open no empty tracker runs


#: LightningCLI's own optimizer options and the model parameter that sets the same thing.
_TWO_WAYS = {"optimizer": "optimizer", "lr_scheduler": "scheduler"}


def check_one_optimizer(config: Any) -> None:
    """Refuse LightningCLI's ``--optimizer``/``--lr_scheduler`` beside the model's own ``optimizer``/``scheduler``.

    LightningCLI's would silently win: the run trains with one optimizer while ``config.yaml`` and
    the tracked params name the other.
    """
    model_args = (config.get("model") or {}).get("init_args") or {}
    for option, parameter in _TWO_WAYS.items():
        given, own = config.get(option), model_args.get(parameter) if hasattr(model_args, "get") else None
        if given and own:
            name = lambda v: str(v.get("class_path") if hasattr(v, "get") else v).rsplit(".", 1)[-1]  # noqa: E731
            raise ValueError(
                f"--{option} {name(given)} and model.init_args.{parameter} ({name(own)}) both set the {parameter}: "
                f"keep one: drop --{option} and set --model.init_args.{parameter} {name(given)}, or drop "
                f"model.init_args.{parameter} (--model.init_args.{parameter} null)."
            )
