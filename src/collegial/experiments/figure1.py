"""Appendix Figure 1 at CPU scale: does the search's choice train better?

``collegial reproduce figure1`` runs the search for a family against a baseline, picks ``points``
architectures along the primal curve (equal parameters; widths spread from the baseline's down to
small n, the primal optimum included) and ``points`` along the dual curve (the baseline's
variance; the dual optimum included), and then, in this order:

1. **measures the predictors** of every architecture that need no training: the block's predicted
   variance ``V1(n)/m``, the whole model's NTK variance on real image pairs
   (:func:`collegial.search.verify.measure`), parameters, FLOPs and training images/s;
2. **pre-registers** its pass criteria (written to ``figure1.json`` and the log before any run
   trains): the primal optimum minus the baseline < 0 with the paired 95% interval excluding 0,
   and the dual optimum at most ``dual_margin`` points worse than the baseline (the paired 95%
   interval's upper end below it);
3. **a pilot**: the baseline and the primal optimum at the shared learning rate, ``pilot_seeds``
   seeds; the paired spread of their difference and the seeds that resolve
   ``target_difference`` at 95% are printed (the pilot's runs are reused below);
4. **chooses each architecture's learning rate** from the grid ``lrs`` on ``val_images``
   training images held out of every run (``select_seeds`` seeds per rate; the test images are
   never used to choose);
5. **trains** ``seeds`` seeds of every architecture at its chosen rate and at the shared rate
   ``lr`` (seed s of every run shares its data order), and reports both, the chosen rate first.

Per curve and pooled over both: the rank correlations (Spearman, Kendall) of mean test error with
every predictor, each with an exact permutation p-value and a bootstrap 95% interval that resamples
the seeds jointly across architectures; the criteria's pass/fail. ``quick`` (``--quick``) is a
smoke test of the pipeline: its outputs say "no conclusion".

Resumable (:mod:`collegial.experiments.figure1_runs`); every setting (the alpha file and the data
included) is validated and the sweep folder locked (:func:`collegial.io.folder_lock`) before
anything in it changes; a failed start leaves no trace. Reports: :mod:`~collegial.experiments.
figure1_report`; the command line: :mod:`collegial.commands.reproduce_figure1`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from collegial.devices import check_device
from collegial.errors import UserError
from collegial.experiments import figure1_runs as runs
from collegial.experiments.figure1_report import summarize, write_outputs
from collegial.experiments.figure1_runs import OUT_FILES, RunKey, RunOutcome, RunSpec
from collegial.io import write_json_atomic
from collegial.launch import Launcher, run_jobs
from collegial.models import format_arch, get_family, validate_arch
from collegial.provenance import provenance
from collegial.search.result import SearchResult
from collegial.search.problems import solve_batch
from collegial.search.solve import cost_table, search
from collegial.search.variance import VarianceCurve
from collegial.stats import mean_se, paired_difference, seeds_to_resolve

__all__ = ["Figure1Config", "DEFAULTS", "QUICK", "OUT_FILES", "Point", "config_for", "curve_points",
           "spread_widths", "run_figure1", "preregistration", "check_config", "RunKey", "RunOutcome",
           "choose_rates", "pilot", "pilot_line"]


@dataclass(frozen=True)
class Figure1Config:
    """One sweep. ``lr``: the shared learning rate; ``lrs``: the grid each architecture's rate is
    chosen from on ``val_images`` held-out training images (``select_seeds`` seeds per rate);
    ``target_difference``: the effect (test-error points) the sweep is sized to resolve, and the
    dual criterion's margin unless ``dual_margin``; ``widths``: Algorithm 1's widths when it runs
    here (None: its defaults, up to 128); ``whole_pairs``/``whole_trials``: the whole-model
    variance measurement (0 trials: not measured); ``train_limit``/``test_limit``: images used
    (None: all); ``quick``: a smoke test (no conclusion)."""

    family: str = "mlp"
    dataset: str = "fashion-mnist"
    baseline: str = "1x512d"
    points: int = 5
    seeds: int = 3
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    lrs: tuple[float, ...] = (0.025, 0.05, 0.1)
    val_images: int = 5000
    select_seeds: int = 1
    pilot_seeds: int | None = None  # None: min(3, seeds)
    target_difference: float = 0.3
    dual_margin: float | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    n_min: int = 2
    trials: int = 2000
    widths: tuple[int, ...] | None = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
    alpha_file: str | None = None
    variance: str = "auto"
    whole_pairs: int = 8
    whole_trials: int = 32
    seed: int = 0  # Algorithm 1's, the whole-model measurement's and the bootstrap's seed
    device: str = "cpu"  # where the models train (Algorithm 1 runs on the CPU)
    quick: bool = False

    @property
    def pilot_n(self) -> int:
        """The pilot's seeds: ``pilot_seeds``, by default 3 (or ``seeds`` when fewer)."""
        return min(3, self.seeds) if self.pilot_seeds is None else self.pilot_seeds

    @property
    def margin(self) -> float:
        return self.target_difference if self.dual_margin is None else self.dual_margin

    def key(self) -> dict[str, Any]:
        """What must match for a rerun to continue this sweep (as JSON reads it back)."""
        return json.loads(json.dumps(asdict(self)))


#: CPU-sized defaults per family (sized by measurement: docs/figure1.md). Any other family starts
#: from mlp's settings on its own ``default_dataset``, with no baseline.
DEFAULTS: dict[str, Figure1Config] = {
    "mlp": Figure1Config(),
    "resnext11": Figure1Config(family="resnext11", baseline="1x64d", seeds=4, epochs=2, lr=0.05,
                               train_limit=12000, test_limit=5000, val_images=2000, target_difference=0.5,
                               widths=None, whole_trials=16),
}
#: ``--quick``: the pipeline in about a minute (what CI runs; a smoke test, no conclusion).
QUICK = dict(points=3, seeds=2, epochs=1, train_limit=640, test_limit=512, val_images=128, trials=160,
             pilot_seeds=2, whole_pairs=2, whole_trials=8, widths=None, baseline=None, quick=True)


def config_for(family: str, quick: bool = False, **overrides: Any) -> Figure1Config:
    base = DEFAULTS.get(family)
    if base is None:
        base = replace(DEFAULTS["mlp"], family=family, dataset=get_family(family).default_dataset, baseline="",
                       widths=None)
    if quick:
        q = dict(QUICK)
        q["baseline"] = {"mlp": "1x128d"}.get(family, base.baseline)
        base = replace(base, **q)
    over = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    cfg = replace(base, **over)
    check_config(cfg)
    return cfg


def check_config(cfg: Figure1Config) -> None:
    """Every setting a user can get wrong, checked before any work (one-line errors)."""
    fam = get_family(cfg.family)
    if fam.arch_kind != "ce":
        raise UserError(f"family {cfg.family!r} has no (m, n) architectures")
    if not cfg.baseline:
        raise UserError(f"family {cfg.family!r} has no default baseline; pass --baseline MxNd")
    _, n_b = validate_arch(cfg.family, cfg.baseline)
    if cfg.alpha_file is None:
        from collegial.ntk.alpha import DEFAULT_WIDTHS

        ws = cfg.widths or DEFAULT_WIDTHS
        if not min(ws) <= n_b <= max(ws):
            raise UserError(f"baseline width {n_b} lies outside Algorithm 1's widths "
                            f"{min(ws)}..{max(ws)}; pass --widths or an --alpha-file that covers it")
    for name, value, least in (("points", cfg.points, 2), ("seeds", cfg.seeds, 2), ("epochs", cfg.epochs, 1),
                               ("n-min", cfg.n_min, 1), ("select-seeds", cfg.select_seeds, 1),
                               ("pilot-seeds", cfg.pilot_n, 2), ("val-images", cfg.val_images, 0)):
        if value < least:
            raise UserError(f"--{name} must be >= {least}, got {value}")
    if cfg.pilot_n > cfg.seeds or cfg.select_seeds > cfg.seeds:
        raise UserError(f"--pilot-seeds ({cfg.pilot_n}) and --select-seeds ({cfg.select_seeds}) "
                        f"cannot exceed --seeds ({cfg.seeds})")
    if not cfg.lrs or any(not (r > 0 and math.isfinite(r)) for r in (*cfg.lrs, cfg.lr)):
        raise UserError(f"learning rates must be positive numbers, got --lr {cfg.lr} and --lrs {list(cfg.lrs)}")
    if len(set(cfg.lrs)) > 1 and cfg.val_images == 0:
        raise UserError("choosing a learning rate from --lrs needs a validation split: --val-images > 0")
    if not (cfg.target_difference > 0 and cfg.margin > 0):
        raise UserError(f"--target-difference and --dual-margin must be > 0, got {cfg.target_difference}, "
                        f"{cfg.margin}")
    if cfg.whole_trials and (cfg.whole_trials < 4 or cfg.whole_pairs < 1):
        raise UserError(f"the whole-model variance needs >= 4 trials and >= 1 pair, got {cfg.whole_trials}, "
                        f"{cfg.whole_pairs} (0 trials: not measured)")
    check_device(cfg.device)


# ------------------------------------------------------------------------------------ points


@dataclass
class Point:
    """One architecture on a curve: its predictors and training outcome (errors in %, one per
    seed; ``errors`` at its chosen learning rate ``lr``, ``errors_shared`` at the shared one)."""

    arch: str
    m: int
    n: int
    params: int
    variance: float
    variance_se: float
    role: str = ""  # "baseline", "optimum", "baseline+optimum" (the optimum is the baseline) or ""
    errors: list[float] | None = None
    flops: int = 0
    whole_variance: float | None = None
    whole_variance_se: float | None = None
    images_per_s: float | None = None
    lr: float | None = None
    val_errors: dict[str, float] = field(default_factory=dict)  # mean validation error per rate
    errors_shared: list[float] | None = None

    @property
    def error_mean(self) -> float:
        return mean_se(self.errors or [])[0]

    @property
    def error_se(self) -> float:
        return mean_se(self.errors or [])[1]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_mean": self.error_mean, "error_se": self.error_se}


def spread_widths(available: list[int], must: list[int], k: int) -> list[int]:
    """``k`` widths of ``available`` holding every width of ``must``, the rest spread evenly in
    log n between the least and the greatest available width (sorted)."""
    avail = sorted(set(available))
    chosen = sorted(set(must) & set(avail))
    k = min(k, len(avail))
    targets = np.geomspace(avail[0], avail[-1], max(k, 2))
    for t in sorted(targets, key=lambda t: min((abs(math.log(t / c)) for c in chosen), default=1e9), reverse=True):
        if len(chosen) >= k:
            break
        free = [a for a in avail if a not in chosen]
        if free:
            chosen.append(min(free, key=lambda a: abs(math.log(a / t))))
    return sorted(chosen)[:k]


def curve_points(res: SearchResult, curve: VarianceCurve, cfg: Figure1Config) -> dict[str, list[Point]]:
    """``points`` architectures along the primal and the dual curve of ``res`` (the one batched
    solver, :func:`collegial.search.problems.solve_batch`)."""
    tab = cost_table(cfg.family, cfg.dataset)
    m_b, n_b = res.baseline.m, res.baseline.n
    ns = np.arange(max(cfg.n_min, res.n_range[0]), n_b + 1)
    ib = int(np.searchsorted(ns, n_b))
    v, se = curve(ns), curve.stderr(ns)
    solved = solve_batch(tab.fixed("params"), tab.per_path("params", ns), v, budget=res.budget,
                         v_target=v[ib] / m_b, rounding=res.rounding)
    out: dict[str, list[Point]] = {}
    for prob, sol in zip(("primal", "dual"), solved):
        ms, cost, var = sol.m[0], sol.cost[0], sol.variance[0]
        opt = getattr(res, prob)
        widths = spread_widths([int(n) for n in ns[ms >= 1]], [n_b, opt.n], cfg.points)
        pts = []
        for w in widths:
            i = int(np.searchsorted(ns, w))
            m = int(ms[i])
            roles = [r for r, (rm, rn) in (("baseline", (m_b, n_b)), ("optimum", (opt.m, opt.n))) if (m, w) == (rm, rn)]
            role = "+".join(roles)  # "baseline", "optimum", "baseline+optimum" or ""
            pts.append(Point(format_arch(m, w), m, w, int(cost[i]), float(var[i]), float(se[i] / m), role))
        out[prob] = pts
    return out


def distinct(curves: dict[str, list[Point]]) -> list[Point]:
    """Every architecture of the curves once (the primal curve's point when on both)."""
    seen: dict[str, Point] = {}
    for pts in curves.values():
        for p in pts:
            seen.setdefault(p.arch, p)
    return sorted(seen.values(), key=lambda p: (p.n, p.m))


# -------------------------------------------------------------------------------- predictors


def measure_predictors(cfg: Figure1Config, curves: dict[str, list[Point]], log: Any) -> None:
    """Fill every point's FLOPs, whole-model NTK variance (``whole_trials`` > 0) and training
    images/s (all cached: a rerun measures nothing again)."""
    from collegial.models.costs import model_costs
    from collegial.search.verify import PAIR_POOL, VerifySettings, measure
    from collegial.train.data import standardized_train_images
    from collegial.search.speed import throughput_cache_dir
    from collegial.train.throughput import measure_throughput

    pts = distinct(curves)
    whole: dict[str, Any] = {}
    if cfg.whole_trials:
        t = time.time()
        settings = VerifySettings(cfg.dataset, pairs=cfg.whole_pairs, trials=cfg.whole_trials, seed=cfg.seed)
        images, labels = standardized_train_images(cfg.dataset, PAIR_POOL)
        res = measure(cfg.family, [p.arch for p in pts], images, labels, settings, device=cfg.device)
        whole = {r.arch: r for r in res.rows}
        log(f"[figure1] whole-model NTK variance of {len(pts)} architectures ({time.time() - t:.0f} s)")
    speed: dict[str, float] = {}
    for p in pts:
        speed[p.arch] = measure_throughput(cfg.family, p.arch, cfg.dataset, batch_size=cfg.batch_size,
                                          device=cfg.device, cache=throughput_cache_dir()).images_per_s
    for p in (q for pts_ in curves.values() for q in pts_):
        p.flops = model_costs(cfg.family, p.arch, cfg.dataset).flops
        p.images_per_s = speed[p.arch]
        if p.arch in whole:
            p.whole_variance, p.whole_variance_se = float(whole[p.arch].v), float(whole[p.arch].stderr)


# ------------------------------------------------------------------------- pre-registration


def preregistration(cfg: Figure1Config, curves: dict[str, list[Point]]) -> dict[str, Any]:
    """The sweep's pass criteria and plan, fixed before any run trains."""
    base = next(p for p in curves["primal"] if "baseline" in p.role)
    crit = {}
    for prob in ("primal", "dual"):
        opt = next(p for p in curves[prob] if "optimum" in p.role)
        test = ("optimum minus baseline < 0: the paired 95% interval's upper end below 0" if prob == "primal" else
                f"optimum at most {cfg.margin:g} points worse than the baseline: the paired 95% interval's "
                f"upper end below {cfg.margin:g}")
        crit[prob] = {"optimum": opt.arch, "baseline": base.arch, "test": test, "bound": 0.0 if prob == "primal"
                      else cfg.margin, "testable": opt.arch != base.arch}
    return {
        "criteria": crit,
        "primary": "each architecture at its learning rate chosen on validation error; the shared rate reported beside",
        "archs": [p.arch for p in distinct(curves)],
        "lrs": list(cfg.lrs), "shared_lr": cfg.lr, "seeds": cfg.seeds, "epochs": cfg.epochs,
        "target_difference": cfg.target_difference, "smoke_test": cfg.quick,
    }


# ---------------------------------------------------------------------------------- training


def _job(spec: RunSpec, key: RunKey, root: Path) -> RunOutcome:
    """One run of the sweep as a job of its own (:mod:`collegial.launch`): it loads its data."""
    from collegial.train.data import load_dataset

    data = load_dataset(spec.dataset, train_limit=spec.train_limit, test_limit=spec.test_limit)
    return runs.train_one(spec, key, root, data, lambda s: None)


def execute(keys: list[RunKey], spec: RunSpec, out: Path, data: Any, launcher: Launcher, log: Any,
            stage: str) -> dict[RunKey, RunOutcome]:
    """Train (or reuse) every run of ``keys`` (duplicates once), in this process or as jobs."""
    todo = list(dict.fromkeys(keys))
    t0 = time.time()
    if launcher.in_process:  # one after another, with the data loaded once
        got = {}
        for i, k in enumerate(todo, 1):
            t = time.time()
            got[k] = runs.train_one(spec, k, out, data, log)
            log(f"[figure1] {stage} {i}/{len(todo)} {k.arch} lr {k.lr:g} seed {k.seed}: {got[k].test:.2f}% test error"
                + (f", {got[k].val:.2f}% validation" if got[k].val is not None else "")
                + f" ({time.time() - t:.0f} s; {time.time() - t0:.0f} s in all)")
        return got
    log(f"[figure1] {stage}: {len(todo)} runs through the {launcher.kind} launcher"
        + (f" ({launcher.jobs} at once)" if launcher.kind == "local" else ""))
    res = run_jobs(_job, [(spec, k, out) for k in todo], launcher, out / "submitit")
    log(f"[figure1] {stage}: {len(todo)} runs done ({time.time() - t0:.0f} s)")
    return dict(zip(todo, res))


def pilot(cfg: Figure1Config, curves: dict[str, list[Point]], got: dict[RunKey, RunOutcome]) -> dict[str, Any]:
    """The paired spread of (primal optimum - baseline) over the pilot seeds at the shared rate
    (the primal curve's narrowest point when the optimum is the baseline) and the seeds that
    resolve ``target_difference`` at 95% at these epochs."""
    a, b = pilot_archs(curves)
    d = paired_difference([got[RunKey(a, cfg.lr, s)].test for s in range(cfg.pilot_n)],
                          [got[RunKey(b, cfg.lr, s)].test for s in range(cfg.pilot_n)])
    need = seeds_to_resolve(d["sd"], cfg.target_difference) if math.isfinite(d["sd"]) else None
    return {"pair": [a, b], "seeds": cfg.pilot_n, "sd": d["sd"], "mean": d["mean"],
            "target_difference": cfg.target_difference, "epochs": cfg.epochs, "seeds_needed": need,
            "seeds_run": cfg.seeds, "enough": need is not None and need <= cfg.seeds}


def pilot_archs(curves: dict[str, list[Point]]) -> tuple[str, str]:
    base = next(p for p in curves["primal"] if "baseline" in p.role)
    opt = next(p for p in curves["primal"] if "optimum" in p.role)
    if opt.arch == base.arch:
        opt = min(curves["primal"], key=lambda p: p.n)
    return opt.arch, base.arch


def pilot_line(p: dict[str, Any]) -> str:
    need = p["seeds_needed"]
    return (f"[figure1] pilot: paired s.d. of {p['pair'][0]} - {p['pair'][1]} over {p['seeds']} seeds = "
            f"{p['sd']:.2f} points; resolving {p['target_difference']:g} points at 95% after {p['epochs']} epochs "
            + (f"needs {need} seeds; this sweep runs {p['seeds_run']}"
               + ("" if p["enough"] else f" (too few: pass --seeds {need})") if need else
               "needs more than 100 seeds at this spread"))


def choose_rates(cfg: Figure1Config, archs: list[str], got: dict[RunKey, RunOutcome]) -> dict[str, tuple[float, dict[str, float]]]:
    """Each architecture's learning rate: the least mean validation error over ``select_seeds``
    seeds (a tie goes to the shared rate, then the smaller rate), and every rate's mean."""
    out = {}
    for a in archs:
        if len(set(cfg.lrs)) == 1:  # nothing to choose
            out[a] = (cfg.lrs[0], {})
            continue
        val = {lr: float(np.mean([got[RunKey(a, lr, s)].val for s in range(cfg.select_seeds)])) for lr in cfg.lrs}
        best = min(val, key=lambda lr: (round(val[lr], 9), lr != cfg.lr, lr))
        out[a] = (best, {f"{lr:g}": v for lr, v in val.items()})
    return out


def _train_all(cfg: Figure1Config, curves: dict[str, list[Point]], spec: RunSpec, out: Path, data: Any,
               launcher: Launcher, log: Any, pilot_only: bool = False) -> dict[str, Any]:
    """Pilot, learning-rate choice and the final runs; fills every point's errors; the pilot
    (``pilot_only``: the pilot alone)."""
    archs = [p.arch for p in distinct(curves)]
    got: dict[RunKey, RunOutcome] = {}
    a, b = pilot_archs(curves)
    got |= execute([RunKey(x, cfg.lr, s) for x in (a, b) for s in range(cfg.pilot_n)],
                   spec, out, data, launcher, log, "pilot")
    pil = pilot(cfg, curves, got)
    log(pilot_line(pil))
    if pilot_only:
        return pil
    if len(cfg.lrs) > 1:
        got |= execute([RunKey(x, lr, s) for x in archs for lr in cfg.lrs for s in range(cfg.select_seeds)],
                       spec, out, data, launcher, log, "learning-rate choice")
    rates = choose_rates(cfg, archs, got)
    log("[figure1] learning rates chosen on validation: "
        + ", ".join(f"{x} {rates[x][0]:g}" for x in archs))
    got |= execute([RunKey(x, lr, s) for x in archs for lr in dict.fromkeys((rates[x][0], cfg.lr))
                    for s in range(cfg.seeds)], spec, out, data, launcher, log, "final runs")
    for p in (q for pts in curves.values() for q in pts):
        p.lr, p.val_errors = rates[p.arch]
        p.errors = [got[RunKey(p.arch, p.lr, s)].test for s in range(cfg.seeds)]
        p.errors_shared = [got[RunKey(p.arch, cfg.lr, s)].test for s in range(cfg.seeds)]
    return pil


# ------------------------------------------------------------------------------------ sweep


def run_figure1(cfg: Figure1Config, out: Path, *, overwrite: bool = False, progress: bool = True,
                inputs: Any = None, launcher: Launcher | None = None, pilot_only: bool = False) -> dict[str, Any]:
    """Run (or continue) the sweep into ``out``; returns the ``figure1.json`` object
    (``pilot_only``: stop after the pilot; the same command without it continues the sweep,
    reusing the pilot's runs). Every
    setting (the alpha file and the data included) is validated, and the sweep folder locked,
    before anything in ``out`` changes; a failed start leaves no trace. ``launcher``: where the
    runs execute (:mod:`collegial.launch`; default: one after another in this process)."""
    from collegial.io import folder_lock
    from collegial.ntk.inputs import ProbeInputs
    from collegial.train.data import load_dataset
    from collegial.train.recipes import get_recipe

    check_config(cfg)
    recipe = get_recipe(cfg.dataset).override(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
    recipe = recipe.scaled(cfg.epochs)
    inputs = ProbeInputs() if inputs is None else inputs
    key = {**cfg.key(), "probe_inputs": None if cfg.alpha_file else inputs.options()}
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    data = load_dataset(cfg.dataset, train_limit=cfg.train_limit, test_limit=cfg.test_limit)
    left = int(data.train_y.numel()) - cfg.val_images
    if left < recipe.batch_size:
        raise UserError(f"{int(data.train_y.numel())} training images less {cfg.val_images} held out for "
                        f"validation leave {left}, fewer than one batch of {recipe.batch_size}")
    spec = RunSpec(cfg.family, cfg.dataset, cfg.device, cfg.val_images, recipe,
                   runs.run_identity(cfg.family, cfg.dataset, recipe, data, cfg.val_images), cfg.train_limit,
                   cfg.test_limit)
    created, locked = not out.exists(), (out / ".lock").exists()
    try:
        with folder_lock(out, "figure1 sweep", arg="out"):
            return _sweep(cfg, out, key, overwrite, data, spec, inputs, progress, launcher or Launcher(), pilot_only)
    except UserError:
        if not locked and not (out / "sweep.json").exists():  # a failed start leaves no trace
            (out / ".lock").unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    out.rmdir()
        raise


def _sweep(cfg: Figure1Config, out: Path, key: dict[str, Any], overwrite: bool, data: Any, spec: RunSpec,
           inputs: Any, progress: bool, launcher: Launcher, pilot_only: bool) -> dict[str, Any]:
    """:func:`run_figure1` once the sweep folder is locked."""
    from collegial.search.variance import load_curve

    start_over = runs.plan(key, out, overwrite)
    t0 = time.time()
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    curve = load_curve(cfg.alpha_file, cfg.variance, family=cfg.family, trials=cfg.trials, seed=cfg.seed,
                       inputs=inputs, widths=cfg.widths)
    n_b = validate_arch(cfg.family, cfg.baseline)[1]
    res = search(cfg.family, cfg.dataset, cfg.baseline, curve, budget="params", n_range=(cfg.n_min, max(n_b, cfg.n_min)))
    curves = curve_points(res, curve, cfg)
    runs.start(key, out, start_over)  # everything validated: only now delete and write
    if cfg.quick:
        log("[figure1] --quick: a smoke test of the pipeline; its numbers support no conclusion")
    measure_predictors(cfg, curves, log)
    prereg = preregistration(cfg, curves)
    registered = {"status": "registered, not yet trained", "config": cfg.key(), "preregistered": prereg,
                  "points": {prob: [p.to_dict() for p in pts] for prob, pts in curves.items()},
                  "provenance": provenance(cfg.seed)}
    write_json_atomic(out / "figure1.json", registered)
    for prob, c in prereg["criteria"].items():
        log(f"[figure1] pre-registered ({prob}): {c['optimum']} vs {c['baseline']}: {c['test']}"
            + ("" if c["testable"] else " (not testable: the optimum is the baseline)"))
    pil = _train_all(cfg, curves, spec, out, data, launcher, log, pilot_only)
    if pilot_only:
        obj = {**registered, "status": "registered, pilot only", "pilot": pil, "seconds": time.time() - t0}
        write_json_atomic(out / "figure1.json", obj)
        return obj
    obj = summarize(cfg, res, curves, spec.recipe, prereg, pil, time.time() - t0)
    obj["provenance"] = provenance(cfg.seed)
    write_outputs(obj, out)
    return obj
