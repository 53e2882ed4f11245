"""``collegial search FAMILY --dataset D --baseline ARCH [...]``: the primal and dual optima.

Prints the recommendation first (primal and dual: arch, params, GFLOPs, variance with its
standard error, rho, probability of being optimal), then each problem's optimal set (the widths
it spans, at most five candidates), the optimum under the other variance models, and the
paper's table (model, rho, params, GFLOPs, variance); ``--all-ties`` adds the full near-tie
lists. For every curve Algorithm 1 measured (``--no-m-check`` skips it) the 1/m law is checked at
the answers' own (m, n) and, where it departs, said on the answer's first line and corrected
(:mod:`collegial.search.m_check`). ``--json`` prints one JSON object instead. ``--out DIR`` also writes ``search.json``, ``search.md``, ``primal.png`` and
``dual.png`` (existing files are refused unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from collegial.commands.budget import parse_budget_value
from collegial.commands.common import add_device_option, add_output_arguments, add_progress_option, device_from_args
from collegial.commands.common import emit, prepare_out, progress_from_args, write_json
from collegial.commands.probe_options import add_probe_arguments, probe_inputs
from collegial.commands.verify import add_verify_arguments
from collegial.errors import UserError, flag_names
from collegial.io import write_text_atomic
from collegial.models import format_arch, get_dataset_spec, get_family, list_families, validate_arch
from collegial.provenance import provenance
from collegial.search.solve import BUDGETS, ROUNDINGS, SOLVERS, TIE_RULES, search
from collegial.search.result import format_table
from collegial.search.variance import (
    DEFAULT_DRAWS,
    DEFAULT_VARIANCE_MODEL,
    ON_THE_FLY_TRIALS,
    VARIANCE_MODELS,
    load_curve,
)


def add_curve_arguments(p: argparse.ArgumentParser, *, default_trials: int = ON_THE_FLY_TRIALS) -> None:
    """Options choosing the variance curve (shared with ``collegial reproduce search``)."""
    p.add_argument("--alpha-file", default=None, metavar="F",
                   help="alpha.json from 'collegial fit-alpha --json' (or its directory), measured by "
                   "the family's probe; without it Algorithm 1 runs here with the family's probe, "
                   f"T={default_trials} trials per width and the --inputs options (cached)")
    p.add_argument("--variance", choices=VARIANCE_MODELS, default=DEFAULT_VARIANCE_MODEL,
                   help="variance model V1(n): auto (default: smooth where its chi2 fits, else "
                   "empirical), prop1, fit2, smooth (cubic in log n) or empirical (log-log table)")
    p.add_argument("--trials", type=int, default=default_trials,
                   help=f"Monte Carlo trials per width when Algorithm 1 runs here (default {default_trials})")
    p.add_argument("--ties", choices=TIE_RULES, default="paired",
                   help="near-tie rule: paired bootstrap test (default) or interval overlap")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the near-ties (0.95)")
    p.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                   help=f"bootstrap draws of the curve (default {DEFAULT_DRAWS})")
    p.add_argument("--seed", type=int, default=0, help="seed of Algorithm 1 and of the bootstrap (>= 0)")
    add_probe_arguments(p)


MAX_DRAWS = 100_000


def check_curve_arguments(args: argparse.Namespace) -> None:
    """The curve options' ranges, before any work (shared with ``reproduce search``); a note
    on stderr when options that only apply to Algorithm 1 run here come with ``--alpha-file``."""
    if getattr(args, "alpha_file", None) is not None:
        from collegial.commands.probe_options import PROBE_DEFAULTS

        unused = [f"--{k.replace('_', '-')}" for k, v in {**PROBE_DEFAULTS, "trials": ON_THE_FLY_TRIALS}.items()
                  if getattr(args, k, v) != v]
        if unused:
            print(f"collegial: note: {', '.join(unused)} apply when Algorithm 1 runs here; the --alpha-file "
                  "curve was measured with its own settings", file=sys.stderr)
    if not 2 <= args.draws <= MAX_DRAWS:
        raise UserError(f"--draws must lie in 2..{MAX_DRAWS}, got {args.draws}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.trials < 2:
        raise UserError(f"--trials must be >= 2, got {args.trials}")
    if not 0.0 < args.level < 1.0:
        raise UserError(f"--level must lie strictly between 0 and 1, got {args.level}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="training-free search of (m, n): primal and dual optima",
        description="Find the optimally smooth (primal: least NTK variance V1(n)/m within the "
        "baseline's cost) and optimally compact (dual: least cost with variance <= the "
        "baseline's) collegial ensembles of a family, with their Monte Carlo near-ties.",
    )
    p.add_argument("family", help=f"model family: {', '.join(list_families())}")
    p.add_argument("--dataset", default=None, help="dataset the family is built for (family default)")
    p.add_argument("--baseline", required=True, metavar="ARCH", help="baseline MxNd, e.g. 1x128d")
    p.add_argument("--budget", choices=(*BUDGETS, "throughput"), default="params",
                   help="cost: params (default), flops, or throughput: the primal is the least variance among "
                   "architectures that train at least as fast as the baseline on --device (measured: real training "
                   "steps at the recipe's batch size, cached; the dual stays on params); implies --throughput")
    p.add_argument("--budget-value", default=None, metavar="X",
                   help="primal budget (e.g. 10M, 3.5G) instead of the baseline's cost")
    p.add_argument("--rounding", choices=ROUNDINGS, default="floor",
                   help="primal m per width: floor (within budget, default) or nearest the budget")
    p.add_argument("--solver", choices=SOLVERS, default="integer",
                   help="integer: exact integer problems (default); relaxed: n from the continuous "
                   "problem argmin V1(n) B(n), shared by primal and dual, then m rounded")
    p.add_argument("--n-range", default=None, metavar="LO:HI",
                   help="widths searched (default: the curve's measured widths within 2:128)")
    p.add_argument("--bn-flops", action="store_true", help="count one FLOP per BatchNorm output")
    add_curve_arguments(p)
    p.add_argument("--all-ties", action="store_true", help="also list every near-tie")
    p.add_argument("--allow-probe-mismatch", action="store_true",
                   help="use an --alpha-file measured on other channels or input size than the family's "
                   "probe block declares (refused otherwise), with a note on the answer's first line")
    p.add_argument("--m-check", action=argparse.BooleanOptionalAction, default=None,
                   help="measure V(m, n) of the probe block at the primal's and dual's own (m, n) (the "
                   "curve's T, pairs and seed; cached) and report V(m, n) / (V1(n)/m); where the 1/m law "
                   "departs (> 10%% and > 2 s.e.) the answer's first line says so and the answer is "
                   "re-solved with the measured correction (docs/search.md). Default: on for every curve "
                   "Algorithm 1 measured (14 s for resnext29 cifar10 1x128d on 2 cores, 48 s for resnext11 mnist "
                   "1x64d on a busy machine, uncached; then cached); --no-m-check skips it")
    p.add_argument("--verify", action="store_true",
                   help="measure the whole model's NTK variance (collegial verify) at the baseline, both answers, "
                   "their optimal sets and 3 points along each curve, beside the prediction, and re-solve on the "
                   "measured values among them; the --verify-* options as verify's (defaults: 8 pairs x 64 inits)")
    add_verify_arguments(p, prefix="verify-")
    p.add_argument("--data-dir", default=None, help="with --verify: folder of datasets that are not shipped (CIFAR)")
    p.add_argument("--robust", action="store_true",
                   help="also solve under every documented probe design (relu inputs at correlation 0.3, 0.6, "
                   "0.9; images of the dataset where shipped) and every variance model with an acceptable fit; the "
                   "first lines say whether the answer is robust or conditional on the probe, and the optimal set "
                   "over designs is their union. Off by default: the first run measures 2-3 more curves with the "
                   "family's probe (resnext29: ~1 min each; resnext11's generic engine: ~4 min each), cached after")
    p.add_argument("--throughput", action="store_true",
                   help="measure the training images/s of the baseline, both answers and their optimal sets on "
                   "--device (3 timed steps at the recipe's batch size after 1 warm-up, both memory layouts on "
                   "image models; cached per device) and show each beside its ratio to the baseline's")
    p.add_argument("--throughput-batch", type=int, default=None, metavar="B",
                   help="batch size of the timed steps (default: the dataset's recipe batch)")
    add_device_option(p, "Algorithm 1 (without --alpha-file), --verify and --throughput")
    add_progress_option(p)
    add_output_arguments(p, out_help="write search.json, search.md and PNG curves (and verify.png with --verify)")
    p.set_defaults(func=run)


OUT_FILES = ("search.json", "search.md", "primal.png", "dual.png")

#: The library's argument names in its messages -> this command's flags (see flag_names).
FLAGS = {"n_range": "--n-range", "budget_value": "--budget-value", "level": "--level", "trials": "--trials",
         "inputs": "--inputs", "kind": "--inputs", "run_algorithm1(widths=...)": "fit-alpha --widths",
         "allow_probe_mismatch": "--allow-probe-mismatch"}


@flag_names(FLAGS)
def run(args: argparse.Namespace) -> int:
    fam, dataset, pair_images, inputs, speed = _check_first(args)
    budget_value = parse_budget_value(args.budget_value)
    out = prepare_out(args.out, OUT_FILES, overwrite=args.overwrite) if args.out else None
    if args.alpha_file is None:
        print(f"collegial search: no --alpha-file; running Algorithm 1 ({fam.name}'s probe block, "
              f"inputs {inputs.label}, {inputs.pairs} pairs, T={args.trials} per width; cached)", file=sys.stderr)
    curve = load_curve(args.alpha_file, args.variance, family=args.family, trials=args.trials, seed=args.seed, inputs=inputs,
                       draws=args.draws, progress=progress_from_args(args), allow_probe_mismatch=args.allow_probe_mismatch,
                       device=args.device)
    bad = curve.fit.m_law_failures()
    if bad:
        print(f"collegial search: note: in this curve's 1/m check the ensemble law fails at m = "
              f"{', '.join(map(str, bad))}; V1(n)/m misstates the variance of ensembles with that many paths",
              file=sys.stderr)

    def solve(c: Any) -> Any:
        budget = "params" if args.budget == "throughput" else args.budget
        return search(args.family, dataset, args.baseline, c, budget=budget, rounding=args.rounding,
                      n_range=args.n_range, budget_value=budget_value, ties=args.ties, level=args.level,
                      bn_flops=args.bn_flops, solver=args.solver)

    res = solve(curve)
    res.notes = list(curve.notes)  # the curve's own first (an allowed probe mismatch)
    rob = _robust(args, res, curve, dataset, solve) if args.robust else None
    tput = _throughput(args, res, curve, dataset, speed) if speed is not None else None
    mc = _m_check(args, res, curve, dataset)
    ver = _verify(args, res, curve, dataset, pair_images) if pair_images is not None else None
    obj = res.to_dict()
    obj["provenance"] = provenance(args.seed)
    table = format_table(res, all_ties=args.all_ties)
    if rob is not None:
        from collegial.search.robust import format_robustness

        obj["robust"] = rob.to_dict()
        table += "\n\n" + format_robustness(rob)
    if tput is not None:
        obj["throughput"] = tput[0]
        table += "\n\n" + tput[1]
    if mc is not None:
        from collegial.search.m_check import format_m_check

        obj["m_check"] = mc.to_dict()
        table += "\n\n" + format_m_check(mc)
    if ver is not None:
        from collegial.search.verify_report import format_verify

        obj["verify"] = ver.to_dict()
        table += "\n\nwhole-model check (collegial verify):\n" + format_verify(ver)
    if out is not None:
        from collegial.search.plots import plot_both

        write_json(out / "search.json", obj)
        md = format_table(res, all_ties=True) + ("\n\n" + format_m_check(mc) if mc is not None else "")
        if rob is not None:
            md += "\n\n" + format_robustness(rob)
        if tput is not None:
            md += "\n\n" + tput[1]
        files = [str(out / n) for n in OUT_FILES]
        if ver is not None:
            from collegial.search.verify_report import markdown, plot_verify

            md += "\n\n" + markdown(ver)
            if plot_verify(ver, out / "verify.png"):
                files.append(str(out / "verify.png"))
        write_text_atomic(out / "search.md", md + "\n")
        plot_both(res, out)
        obj["files"] = files
    emit(obj, table, as_json=args.json)
    if out is not None and not args.json:
        print(f"wrote {', '.join(obj['files'])}")
    return 0


def _check_first(args: argparse.Namespace) -> tuple[Any, str, Any, Any, Any]:
    """Every cheap check before the (possibly long) Algorithm 1 run: the family, its dataset,
    ``--verify``'s pair images, the probe's inputs and ``--throughput``'s settings. ``args.device``
    becomes the device everything here runs on (cuda asked for and absent: one line, now)."""
    args.device = device_from_args(args)
    fam = get_family(args.family)
    dataset = args.dataset or fam.default_dataset
    check_curve_arguments(args)
    if fam.arch_kind != "ce":
        raise UserError(f"family {args.family!r} has no (m, n) architecture to search")
    get_dataset_spec(dataset)
    try:
        validate_arch(args.family, args.baseline)
    except UserError as e:
        raise UserError(f"baseline {args.baseline!r} is not a member of {args.family}: {e}") from None
    if fam.probe is None and (args.alpha_file is None or args.robust):
        what = "--robust measures its probe at other designs" if args.robust else "pass --alpha-file measured for it"
        raise UserError(f"family {args.family!r} declares no probe; {what}")
    pair_images = _verify_inputs(args, dataset)
    inputs = probe_inputs(args) if args.alpha_file is None else None
    return fam, dataset, pair_images, inputs, _speed_options(args, dataset)


def _speed_options(args: argparse.Namespace, dataset: str) -> dict[str, Any] | None:
    """``--throughput`` / ``--budget throughput``: device, batch and cache (None when off)."""
    if not (args.throughput or args.budget == "throughput"):
        return None
    from collegial.search.variance import cache_dir
    from collegial.train.recipes import get_recipe

    batch = get_recipe(dataset).batch_size if args.throughput_batch is None else args.throughput_batch
    if batch < 1:
        raise UserError(f"--throughput-batch must be >= 1, got {batch}")
    return {"device": args.device, "batch_size": batch, "cache": cache_dir().parent / "throughput"}


def _throughput(args: argparse.Namespace, res: Any, curve: Any, dataset: str, speed: dict[str, Any]) -> tuple[Any, str]:
    """Measured images/s of the baseline, the answers and their optimal sets (and, with
    ``--budget throughput``, the primal under the baseline's throughput): the JSON part, the
    text block; the answers' speed ratios go to the first lines."""
    from collegial.train.throughput import measure_throughput

    timed: dict[str, Any] = {}

    def rate(arch: str) -> float:
        timed[arch] = measure_throughput(args.family, arch, dataset, **speed)
        return timed[arch].images_per_s

    archs = [res.baseline.arch]
    for prob in ("primal", "dual"):
        archs += [res.headline(prob).arch, getattr(res, prob).arch, *res.optimal_set[prob].members[:5]]
    archs = list(dict.fromkeys(archs))
    print(f"collegial search: timing training steps of {len(archs)} architectures on {speed['device']} "
          f"(batch {speed['batch_size']}; cached)", file=sys.stderr)
    rates = {a: rate(a) for a in archs}
    base = rates[res.baseline.arch]
    obj: dict[str, Any] = {"device": speed["device"], "batch_size": speed["batch_size"],
                           "images_per_s": rates, "ratio": {a: r / base for a, r in rates.items()},
                           "timings": {a: t.to_dict() for a, t in timed.items()}}
    lines = [f"training throughput on {speed['device']} (batch {speed['batch_size']}; median step, slowest-fastest "
             "step; ratio to the baseline):"]
    lines += [f"  {a:>8}  {r:>9.0f} img/s ({timed[a].low:.0f}-{timed[a].high:.0f}, {timed[a].steps} steps"
              f"{', channels-last' if timed[a].channels_last else ''})  {r / base:.2f}x" for a, r in rates.items()]
    for prob in ("primal", "dual"):
        a = res.headline(prob).arch
        res.notes.append(f"speed: {prob} {a} trains at {rates[a] / base:.2f}x the baseline's images/s "
                         f"({rates[a]:.0f} vs {base:.0f} on {speed['device']})")
    if args.budget == "throughput":
        from collegial.search.speed import format_speed, throughput_primal

        lo, hi = res.n_range
        widths = [int(w) for w in curve.fit.widths if lo <= w <= hi]
        ans = throughput_primal(args.family, args.baseline, curve, widths, rate)
        obj["primal_at_throughput"] = ans.to_dict()
        lines = [format_speed(ans), "", *lines]
        b = ans.best
        res.notes.insert(0, f"primal at the baseline's throughput: {b['arch']} (variance {b['variance']:.4g}, "
                            f"{b['ratio']:.2f}x the baseline's images/s, P(optimal) = {b['p_best']:.2f})")
    return obj, "\n".join(lines)


def _robust(args: argparse.Namespace, res: Any, curve: Any, dataset: str, solve: Any) -> Any:
    """``--robust``: the answer under every probe design and acceptable variance model
    (:mod:`collegial.search.robust`); its first lines go before the answer's."""
    from collegial.commands.probe_options import load_images
    from collegial.ntk.inputs import DATA_DATASETS, inputs_label
    from collegial.search.robust import PROBLEMS, probe_designs, robustness

    fit = curve.fit
    images = load_images(dataset) if dataset in DATA_DATASETS else None
    main = inputs_label(fit.inputs, fit.correlation, fit.input_data)
    curves = {main: curve}
    for design in probe_designs(dataset, fit.pairs, images):
        if design.label in curves:
            continue
        print(f"collegial search: --robust: the {args.family} probe with inputs {design.label} "
              f"(T={args.trials}; cached)", file=sys.stderr)
        curves[design.label] = load_curve(None, args.variance, family=args.family, trials=args.trials, seed=args.seed,
                                          inputs=design, draws=args.draws, progress=progress_from_args(args),
                                          device=args.device)
    rob = robustness(res, curves, solve)
    if images is None:
        rob.skipped.append(f"data inputs: {dataset} is not shipped here")
    res.notes = [*(rob.line(p) for p in PROBLEMS), *res.notes]
    return rob


def _verify_inputs(args: argparse.Namespace, dataset: str) -> tuple[Any, Any] | None:
    """``--verify``'s options checked and its pair images loaded (None without ``--verify``)."""
    if not args.verify:
        return None
    from collegial.commands.verify import load_pair_images, settings_from_args

    settings_from_args(args, dataset, args.seed, prefix="verify-")
    return load_pair_images(dataset, args.data_dir)


def _verify(args: argparse.Namespace, res: Any, curve: Any, dataset: str, pair_images: tuple[Any, Any]) -> Any:
    """``--verify``: the whole model measured at the candidates of
    :func:`~collegial.search.verify.candidates_to_verify`, re-solved on the measured values; the
    headline and the re-solved answers become the answer's first lines."""
    from collegial.commands.verify import settings_from_args
    from collegial.search.verify import candidates_to_verify, curve_prediction, measure, resolve_measured
    from collegial.search.verify_report import headline

    settings = settings_from_args(args, dataset, args.seed, prefix="verify-")
    images, labels = pair_images
    roles = candidates_to_verify(res)
    print(f"collegial search: verifying on the whole model: {', '.join(roles)} "
          f"({settings.pairs} pairs x {settings.trials} initializations each)", file=sys.stderr)
    ver = measure(args.family, list(roles), images, labels, settings, predict=curve_prediction(curve), roles=roles,
                  progress=progress_from_args(args), device=args.device)
    ver.probe = curve.source
    ver.resolved = resolve_measured(res, ver)
    rv = ver.resolved

    def said(which: str) -> str:
        got, block = rv[which], getattr(res, which).arch
        if got is None:
            return f"{which} none (no verified candidate qualifies)"
        return f"{which} {got['arch']} " + ("(the block's too)" if got["arch"] == block else f"(the block's: {block})")

    res.notes = [f"whole-model check: {headline(ver)}",
                 f"whole-model check: re-solved on the measured variances of the {rv['candidates']} verified "
                 f"candidates: {said('primal')}, {said('dual')}", *res.notes]
    return ver


def _m_check(args: argparse.Namespace, res: Any, curve: Any, dataset: str) -> Any:
    """The 1/m law at the answers (:mod:`collegial.search.m_check`), or None when skipped; sets
    the answer's notes where it departs."""
    from collegial.search.m_check import cached_measure, checked_by_default, points_to_measure, run_m_check
    from collegial.search.solve import cost_table

    fit = curve.fit
    if args.m_check is False or (args.m_check is None and not checked_by_default(fit)):
        return None
    images = None
    if fit.inputs == "data":
        from collegial.commands.probe_options import load_images

        images = load_images(str(fit.input_data))
    measure, log = cached_measure(fit, images)
    pts = points_to_measure(res, fit)
    if pts:
        print(f"collegial search: checking the 1/m law at {', '.join(format_arch(m, n) for m, n in pts)} "
              f"(T={fit.trials}, measured once, then cached; --no-m-check skips)", file=sys.stderr)
    mc = run_m_check(res, curve, measure, cost_table(args.family, dataset, args.bn_flops))
    mc.source = "; ".join(log)
    res.notes = [*res.notes, *mc.notes()]
    return mc
