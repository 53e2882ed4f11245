"""``collegial verify FAMILY ARCH [ARCH ...] --dataset D``: the whole model's NTK variance.

Measures ``Var[K] / E[K]^2`` of each architecture *as built* (every trainable parameter, a unit
random readout of the logits) on pairs of real training images of D over many initializations,
beside the probe block's prediction ``V1(n) / m``, and splits ``K`` by parameter group
(:mod:`collegial.search.verify`). ``--json`` prints one object; ``--out DIR`` writes
``verify.json``, ``verify.md`` and ``verify.png`` (measured against predicted). Under
``torchrun`` the initializations are sharded over ranks; rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from collegial.commands.common import add_device_option, add_output_arguments, add_progress_option, device_from_args
from collegial.commands.common import emit, prepare_out, progress_from_args, write_json
from collegial.errors import UserError, flag_names
from collegial.io import write_text_atomic
from collegial.models import get_dataset_spec, get_family, list_families, validate_arch
from collegial.ntk.whole import WHOLE_BN_MODES, WholeMethod
from collegial.provenance import provenance
from collegial.search.verify import DEFAULT_PAIRS, DEFAULT_TRIALS, PAIR_KINDS, PAIR_POOL, VerifySettings

OUT_FILES = ("verify.json", "verify.md", "verify.png")


def add_verify_arguments(p: argparse.ArgumentParser | Any, *, prefix: str = "") -> None:
    """The measurement options (shared with ``search --verify``; ``prefix`` e.g. ``verify-``)."""
    p.add_argument(f"--{prefix}pairs", type=int, default=DEFAULT_PAIRS,
                   help=f"pairs of real training images (default {DEFAULT_PAIRS})")
    p.add_argument(f"--{prefix}trials", type=int, default=DEFAULT_TRIALS,
                   help=f"initializations per architecture, each measured on every pair (default {DEFAULT_TRIALS}: "
                   "7-12%% relative Monte Carlo s.e. on resnext11 and MNIST, docs/verify.md; ~5%% takes 256)")
    p.add_argument(f"--{prefix}bn", choices=WHOLE_BN_MODES, default="batch",
                   help="BatchNorm: batch (default; the statistics of the probe batch of 2P pair images, as the "
                   "first training step computes) or running (the initial running statistics)")
    p.add_argument(f"--{prefix}pair-kind", choices=PAIR_KINDS, default="any",
                   help="pairs of any two images (default), same-class or different-class images")
    if not prefix:
        p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="keyword argument of the family function, repeatable (e.g. parameterization=ntk for mlp)")
    p.add_argument(f"--{prefix}method", choices=[m.value for m in WholeMethod], default="auto",
                   help="how gradients are computed: auto (layer taps, proved to cover every parameter), "
                   "jacobian, taps or loop (the slow reference)")


def settings_from_args(args: argparse.Namespace, dataset: str, seed: int, *, prefix: str = "") -> VerifySettings:
    key = prefix.replace("-", "_")
    return VerifySettings(dataset, pairs=getattr(args, f"{key}pairs"), trials=getattr(args, f"{key}trials"),
                          bn=getattr(args, f"{key}bn"), pair_kind=getattr(args, f"{key}pair_kind"), seed=seed,
                          method=getattr(args, f"{key}method"), model_args=_model_args(getattr(args, "model_arg", [])))


def _model_args(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> keyword arguments (integers and floats parsed, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--model-arg takes KEY=VALUE, got {item!r}")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        out[key] = value
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="whole-model NTK variance on real data, beside the probe block's prediction",
        description="Measure Var[K]/E[K]^2 of the whole model as built (all trainable parameters, a random "
        "unit readout of the logits, real image pairs) over random initializations, compare it with the "
        "probe block's prediction V1(n)/m, and split K exactly by parameter group.",
    )
    p.add_argument("family", help=f"model family: {', '.join(list_families())}")
    p.add_argument("archs", nargs="+", metavar="ARCH", help="architectures MxNd, e.g. 1x64d 26x3d 174x3d")
    p.add_argument("--dataset", default=None, help="dataset whose training images form the pairs (family default)")
    p.add_argument("--data-dir", default=None, help="folder of datasets that are not shipped (CIFAR, ImageNet32/64)")
    add_verify_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the pairs, readouts and initializations (>= 0)")
    p.add_argument("--alpha-file", default=None, metavar="F",
                   help="the probe curve for the prediction (default: Algorithm 1 on the family's probe, cached)")
    p.add_argument("--predict", action=argparse.BooleanOptionalAction, default=True,
                   help="beside each measurement the probe block's prediction V1(n)/m (default on; --no-predict: "
                   "measure only)")
    add_device_option(p, "the measurement (and of Algorithm 1 when it runs for the prediction)")
    add_output_arguments(p, out_help="write verify.json, verify.md and verify.png")
    add_progress_option(p)
    p.set_defaults(func=run)


FLAGS = {"trials": "--trials", "pairs": "--pairs", "bn": "--bn", "seed": "--seed"}


def check_models(family: str, archs: Any, dataset: str, settings: VerifySettings) -> None:
    """Build every architecture on the meta device (a bad ``--model-arg``: one line, before any work)."""
    import torch

    from collegial.models import create_model

    with torch.device("meta"):
        for a in archs:
            create_model(family, arch=a, dataset=dataset, **settings.model_args)


def load_pair_images(dataset: str, data_dir: str | None) -> tuple[Any, Any]:
    from collegial.commands.probe_options import load_labeled_images

    return load_labeled_images(dataset, PAIR_POOL, data_dir)


def predictor(family: str, alpha_file: str | None, seed: int, *, progress: bool, device: str = "cpu") -> tuple[Any, str]:
    """``predict(m, n) -> (V1(n)/m, s.e.)`` from the family's probe curve, and its source."""
    from collegial.search.variance import load_curve
    from collegial.search.verify import curve_prediction

    curve = load_curve(alpha_file, family=family, seed=seed, progress=progress, device=device)
    return curve_prediction(curve), f"{curve.fit.family} probe, {curve.model} model ({curve.source})"


@flag_names(FLAGS)
def run(args: argparse.Namespace) -> int:
    from collegial.distributed import rank_and_world
    from collegial.search.verify import measure
    from collegial.search.verify_report import format_verify, markdown, plot_verify

    fam = get_family(args.family)
    dataset = args.dataset or fam.default_dataset
    get_dataset_spec(dataset)
    if fam.arch_kind != "ce":
        raise UserError(f"family {args.family!r} has no MxNd architectures to verify")
    for a in args.archs:
        validate_arch(args.family, a)
    if len(set(args.archs)) != len(args.archs):
        raise UserError("an architecture is listed twice")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    settings = settings_from_args(args, dataset, args.seed)
    device = device_from_args(args)
    progress = progress_from_args(args)
    check_models(args.family, args.archs, dataset, settings)
    out = prepare_out(args.out, OUT_FILES, overwrite=args.overwrite) if args.out else None
    images, labels = load_pair_images(dataset, args.data_dir)
    predict, source = (None, "")
    if args.predict:
        if fam.probe is None and args.alpha_file is None:
            raise UserError(f"family {args.family!r} declares no probe; pass --alpha-file or --no-predict")
        predict, source = predictor(args.family, args.alpha_file, args.seed, progress=progress, device=device)
    result = measure(args.family, args.archs, images, labels, settings, predict=predict,
                     progress=progress, device=device)
    result.probe = source
    rank, _ = rank_and_world()
    if rank != 0:
        return 0
    obj = {**result.to_dict(), "provenance": provenance(args.seed)}
    if out is not None:
        write_json(out / "verify.json", obj)
        write_text_atomic(out / "verify.md", markdown(result, " ".join(["collegial", *sys.argv[1:]])))
        wrote = ["verify.json", "verify.md"] + (["verify.png"] if plot_verify(result, out / "verify.png") else [])
        print(f"wrote {', '.join(str(out / w) for w in wrote)}", file=sys.stderr)
    emit(obj, format_verify(result), as_json=args.json)
    return 0
