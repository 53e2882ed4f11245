"""``collegial train FAMILY ARCH [--dataset D] [...]``: train a model with the dataset's recipe.

``--dataset`` defaults to the family's own dataset (``default_dataset`` of its registration:
mnist for mlp and resnext11, cifar10 for resnext29, ...); a preset names its own.

Every recipe field can be overridden (``--epochs``, ``--batch-size``, ``--lr``, ``--momentum``,
``--weight-decay``, ``--milestones``, ``--gamma``, ...); the milestones follow ``--epochs`` (the
recipe's schedule scaled to the run's length) unless ``--fixed-milestones`` or ``--milestones`` is
given. ``--val-images N`` holds N training images out of training and reports their error each
epoch (the same images for every seed and model). ``--seeds K`` trains seeds
``S .. S+K-1`` (one run directory each, ``DIR/seed{S}``) and prints the final test errors as
mean +- standard error in the paper's table format (``--json``: one JSON object instead, the
summary written to ``result.json``, or ``summary.json`` for several seeds). Several processes:
``torchrun --nproc_per_node N -m collegial.cli train ...`` (DDP; NCCL on CUDA, gloo on the CPU).

Exit codes: 0 done; 2 a usage/data error or a non-finite loss (one line on stderr; the last good
checkpoint is kept); 143 stopped by SIGTERM, 130 by Ctrl-C (SIGINT), each after writing a
checkpoint of the exact position (continue with ``--resume``; a second Ctrl-C stops at once).
``--out DIR --resume`` alone continues DIR's run with every setting of its ``config.json``; a
flag given again must match it (only ``--epochs`` may change), else one line names the
difference (:mod:`collegial.commands.resume_settings`). ``--resume`` refuses a folder whose
``last.pt`` is missing or unreadable next to other run files (nothing is deleted); ``--overwrite`` deletes the previous run only once every setting is valid.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from collegial.commands.common import (
    add_device_option,
    add_overwrite_argument,
    add_progress_option,
    emit,
    preset_model,
    progress_from_args,
)
from collegial.commands.launch_options import add_launcher_arguments, jobs_device, launcher_from_args
from collegial.commands.recipe_options import add_recipe_arguments, recipe_overrides
from collegial.commands.resume_settings import (
    check_model,
    config_recipe,
    fill_from_config,
    read_config,
    restore,
    stored_recipe,
    stored_run,
)
from collegial.errors import UserError, flag_names
from collegial.io import write_json_atomic
from collegial.launch import run_jobs
from collegial.models import DATASETS, get_family, list_families, validate_arch
from collegial.provenance import provenance
from collegial.stats import mean_se
from collegial.train.data import load_dataset
from collegial.train.distributed import setup, teardown
from collegial.train.loop import RunConfig, RunResult, train
from collegial.train.recipes import Recipe, get_recipe
from collegial.train.run_folder import check_out_dir

EXIT_SIGTERM = 143
EXIT_SIGINT = 130


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (SGD recipe of the dataset; DDP under torchrun)",
        description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "family", nargs="?",
        help=f"model family ({', '.join(list_families())}) or a preset name; "
        "omitted with --out DIR --resume: DIR's run continues with all its settings",
    )
    p.add_argument("arch", nargs="?", help="MxNd (e.g. 37x10d) or DEPTH-K for wrn")
    _add_data_arguments(p)
    g = p.add_argument_group("recipe overrides (default: the dataset's recipe)")
    add_recipe_arguments(g)
    g.add_argument(
        "--fixed-milestones",
        action="store_true",
        help="with --epochs, keep the recipe's milestones as they are (default: scaled to the run's epochs, "
        "e.g. mnist's 5,8 of 10 epochs become 1,2 for --epochs 2)",
    )
    # the default since milestones follow --epochs; still accepted so that old commands run as they did
    g.add_argument("--scale-milestones", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=None, help="first seed (default 0; with --resume the run's)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds to train (default 1; with --resume the run's)")
    p.add_argument(
        "--out",
        default=None,
        help="run directory (default runs/DATASET-FAMILY-ARCH[-sSEED]); "
        "with --seeds K > 1, one DIR/seedS per seed",
    )
    p.add_argument("--config", default=None, metavar="FILE",
                   help="start a new run with the settings of a run's config.json (FILE, or the folder holding it): "
                   "model, dataset, recipe, seed, data sizes, amp, channels_last; flags given override them")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/last.pt with every setting of DIR/config.json (flags given "
                   "again must match it; only --epochs may change)")
    add_overwrite_argument(p, "start over, deleting DIR's previous results")
    add_launcher_arguments(p)
    add_device_option(p, "training")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events into OUT/tensorboard each epoch (pip install 'collegial[tensorboard]')")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="deterministic algorithms (default: on for cpu, off for cuda)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's, = cores)"
    )
    p.add_argument("--eval-batch-size", type=int, default=256, help="per process (default 256)")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (auto for known GPUs)"
    )
    add_progress_option(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout: the summary written (result.json; summary.json "
        "with --seeds K > 1); the log goes to stderr",
    )
    p.set_defaults(func=run)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The dataset, where its files are, and which of its images a run uses."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None,
                   help=f"one of: {', '.join(DATASETS)} (default: the family's own, e.g. mnist for mlp)")
    g.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    g.add_argument("--train-limit", type=int, default=None, help="use the first N train images")
    g.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    g.add_argument("--val-images", type=int, default=None, metavar="N",
                   help="hold N of the training images out of training and report their loss and error "
                   "each epoch (val_*); the same N images for every seed and model (default 0; with --resume "
                   "the run's)")


_NAMES = {
    "resnext29": "ResNeXt-29",
    "resnext38": "ResNeXt-38",
    "resnext50": "ResNeXt-50",
    "resnext101": "ResNeXt-101",
    "resnext11": "ResNeXt-11",
    "mlp": "MLP",
    "wrn": "Wide ResNet",
}


def model_label(family: str, arch: str) -> str:
    """The paper's name for a model: ``ResNeXt-29, 37x10d``, ``ResNet-29, 1x128d``, ..."""
    name = _NAMES.get(family, family)
    if family == "wrn":
        return f"{name} {arch}"
    if family.startswith("resnext") and arch.startswith("1x"):
        name = name.replace("ResNeXt", "ResNet")
    return f"{name}, {arch}"


def _fmt(values: list[float]) -> str:
    mean, se = mean_se(values)
    return f"{mean:.2f}" if math.isnan(se) else f"{mean:.2f} ± {se:.2f}"


def results_table(family: str, arch: str, results: list[RunResult], seeds: list[int]) -> str:
    """The paper's table row (errors in %, mean ± standard error over seeds)."""
    params = results[0].params
    p = f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params / 1e3:.1f}K"
    top1 = _fmt([r.test_top1_err for r in results])
    top5 = _fmt([r.test_top5_err for r in results])
    k = len(results)
    note = (
        f"mean ± standard error over {k} runs (seeds {', '.join(map(str, seeds))})"
        if k > 1
        else f"one run (seed {seeds[0]})"
    )
    return "\n".join(
        [
            "| Model | Params | Top-1 error | Top-5 error |",
            "|---|---|---|---|",
            f"| {model_label(family, arch)} | {p} | {top1} | {top5} |",
            f"Test errors in %, {note}.",
        ]
    )


def _resolve_model(args: argparse.Namespace) -> tuple[str, str, str]:
    family, arch, dataset = args.family, args.arch, args.dataset
    if family is None:
        raise UserError("train needs FAMILY ARCH (or a preset name), or --out DIR --resume to continue DIR's run")
    preset = preset_model(family, arch, dataset)
    if preset is not None:
        return preset
    fam = get_family(family)
    if arch is None:
        raise UserError(f"train needs ARCH after {family} (e.g. 4x64d), or a preset name")
    validate_arch(family, arch)
    return family, arch, dataset or fam.default_dataset


def _check_options(args: argparse.Namespace) -> None:
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.eval_batch_size < 1:
        raise UserError(f"--eval-batch-size must be >= 1, got {args.eval_batch_size}")
    if args.peak_tflops is not None and not (
        math.isfinite(args.peak_tflops) and args.peak_tflops > 0
    ):
        raise UserError(f"--peak-tflops must be a positive number, got {args.peak_tflops}")
    if args.val_images < 0:
        raise UserError(f"--val-images must be >= 0, got {args.val_images}")
    if args.train_limit is not None and args.val_images >= args.train_limit:
        raise UserError(f"--val-images {args.val_images} leaves none of the --train-limit {args.train_limit} "
                        "images to train on; hold out fewer")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if args.fixed_milestones and args.scale_milestones:
        raise UserError("--fixed-milestones and --scale-milestones contradict each other; pick one "
                        "(milestones follow --epochs by default)")


def _recipe(args: argparse.Namespace, dataset: str, stored: tuple[Path, dict[str, Any]] | None = None,
            config: tuple[Path, dict[str, Any]] | None = None) -> Recipe:
    """The dataset's recipe with the command line's overrides, its milestones following
    ``--epochs`` unless ``--fixed-milestones`` or ``--milestones`` is given (with ``--resume``:
    the stored run's recipe, its milestones as they were; with ``--config``: that run's recipe,
    overridden by the flags given)."""
    overrides: dict[str, Any] = recipe_overrides(args)
    if stored is not None:
        return stored_recipe(*stored, overrides)
    if config is not None and config[1].get("dataset") == dataset:
        return config_recipe(*config, overrides, fixed_milestones=args.fixed_milestones)
    return get_recipe(dataset).with_overrides(overrides, fixed_milestones=args.fixed_milestones)


def _run_dirs(args: argparse.Namespace, family: str, arch: str, dataset: str, seeds: list[int]) -> tuple[Path, list[Path]]:
    """The base folder and one run folder per seed, each checked before any data is loaded."""
    base = Path(args.out) if args.out else Path("runs") / f"{dataset}-{family}-{arch}"
    if len(seeds) == 1 and not args.out:
        base = base.with_name(f"{base.name}-s{seeds[0]}")
    outs = [base if len(seeds) == 1 else base / f"seed{s}" for s in seeds]
    for out in outs:  # refuse before the (possibly slow) data loading
        check_out_dir(out, resume=args.resume, overwrite=args.overwrite)
    if len(seeds) > 1 and (base / "summary.json").exists() and not (args.resume or args.overwrite):
        raise UserError(f"{base / 'summary.json'} exists (a multi-seed run); pass --resume or --overwrite")
    return base, outs


def _summary(family: str, arch: str, dataset: str, seeds: list[int], results: list[RunResult], table: str,
             seed: int) -> dict[str, Any]:
    """The multi-seed ``summary.json`` object."""
    top1 = mean_se([r.test_top1_err for r in results])
    top5 = mean_se([r.test_top5_err for r in results])
    val = [r.val_top1_err for r in results if r.val_top1_err is not None]
    val_summary = {"val_top1_err": val, "val_top1_err_mean": mean_se(val)[0], "val_top1_err_se": mean_se(val)[1]}
    return {
        "family": family,
        "arch": arch,
        "dataset": dataset,
        "seeds": seeds,
        "params": results[0].params,
        "test_top1_err": [r.test_top1_err for r in results],
        "test_top5_err": [r.test_top5_err for r in results],
        "test_top1_err_mean": top1[0],
        "test_top1_err_se": top1[1],
        "test_top5_err_mean": top5[0],
        "test_top5_err_se": top5[1],
        **(val_summary if val else {}),
        "table": table,
        "provenance": provenance(seed),  # the first seed; "seeds" lists them all
    }


#: The library's argument names in its messages -> this command's flags (see flag_names).
FLAGS = {"out": "--out", "resume": "--resume", "overwrite": "--overwrite", "epochs": "--epochs", "lr": "--lr",
         "data_dir": "--data-dir", "device": "--device"}


@flag_names(FLAGS)
def run(args: argparse.Namespace) -> int:
    stored = stored_run(args)  # --resume: the settings of the run it continues
    if stored is not None:
        restore(args, *stored)
    config = None
    if args.config is not None:  # --config: another run's settings, the flags given override them
        if args.resume:
            raise UserError("--config starts a new run and --resume continues one; give one of them")
        config = read_config(args.config)
        fill_from_config(args, config[1])
    args.seed = 0 if args.seed is None else args.seed
    args.seeds = 1 if args.seeds is None else args.seeds
    args.val_images = 0 if args.val_images is None else args.val_images
    family, arch, dataset = _resolve_model(args)
    if stored is not None:
        check_model(*stored, family, arch, dataset)
    _check_options(args)
    recipe = _recipe(args, dataset, stored, config)
    launcher = launcher_from_args(args)
    device = jobs_device(args, launcher)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seeds = [args.seed + i for i in range(args.seeds)]
    base, outs = _run_dirs(args, family, arch, dataset, seeds)
    # with --json, stdout holds the one JSON object: the training log goes to stderr
    if not launcher.in_process:  # each seed a job: K processes here, or submitit
        submitted = time.time()
        calls = [(_run_config(args, family, arch, dataset, out, seed, device, False), recipe, args.data_dir,
                  args.train_limit, args.test_limit, submitted) for seed, out in zip(seeds, outs, strict=True)]
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            results = run_jobs(_seed_job, calls, launcher, base / "submitit")
        stopped = next((r.stopped for r in results if r.stopped), None)
        if stopped:
            return EXIT_SIGINT if stopped == "SIGINT" else EXIT_SIGTERM
        return _report(args, family, arch, dataset, seeds, outs, base, results)
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        data = load_dataset(
            dataset, args.data_dir, train_limit=args.train_limit, test_limit=args.test_limit
        )
        info, _ = setup(device)
        progress = progress_from_args(args)
        results: list[RunResult] = []
        try:
            for seed, out in zip(seeds, outs, strict=True):
                res = train(_run_config(args, family, arch, dataset, out, seed, device, progress), recipe, data)
                if res.stopped:
                    return EXIT_SIGINT if res.stopped == "SIGINT" else EXIT_SIGTERM
                results.append(res)
        finally:
            teardown()
    return _report(args, family, arch, dataset, seeds, outs, base, results) if info.is_main else 0


def _report(args: argparse.Namespace, family: str, arch: str, dataset: str, seeds: list[int], outs: list[Path],
            base: Path, results: list[RunResult]) -> int:
    """The results table (and ``summary.json`` of a multi-seed run), printed or as JSON."""
    table = results_table(family, arch, results, seeds)
    summary: dict[str, Any] | None = None
    if len(seeds) > 1:
        summary = _summary(family, arch, dataset, seeds, results, table, args.seed)
        write_json_atomic(base / "summary.json", summary, indent=2)
    if args.json and summary is None:  # one seed: the run's own result.json
        summary = json.loads((outs[0] / "result.json").read_text())
    emit(summary, table, as_json=args.json)
    return 0


def _seed_job(cfg: RunConfig, recipe: Recipe, data_dir: str | None, train_limit: int | None,
              test_limit: int | None, submitted: float) -> RunResult:
    """One seed of ``train --seeds K`` as a job of its own (:mod:`collegial.launch`): it loads its
    data and trains, continuing from ``out/last.pt`` when the folder holds this command's own
    checkpoint -- a job requeued after a time-out or a preemption runs the same call again.
    Without ``--overwrite`` a checkpoint there is always this command's (or the ``--resume``'s
    run: the command refused any other); with ``--overwrite`` only one written after
    ``submitted`` (the command's ``time.time()``) is, an older one is the run being started over."""
    data = load_dataset(cfg.dataset, data_dir, train_limit=train_limit, test_limit=test_limit)
    last = cfg.out / "last.pt"
    if last.is_file() and (not cfg.overwrite or last.stat().st_mtime >= submitted):
        cfg = dataclasses.replace(cfg, resume=True, overwrite=False)
    return train(cfg, recipe, data)


def _run_config(args: argparse.Namespace, family: str, arch: str, dataset: str, out: Path, seed: int, device: str,
                progress: bool) -> RunConfig:
    return RunConfig(
        family=family,
        arch=arch,
        dataset=dataset,
        out=out,
        seed=seed,
        device=device,
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        deterministic=args.deterministic,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=progress,
        eval_batch_size=args.eval_batch_size,
        peak_tflops=args.peak_tflops,
        tensorboard=args.tensorboard,
        val_images=args.val_images,
    )
