"""Appendix Figure 1 at CPU scale: does the search's choice train better?

``collegial reproduce figure1`` runs the search for a family against a baseline, picks ``points``
architectures along the primal curve (equal parameters; widths spread from the baseline's down to
small n, the primal optimum included) and ``points`` along the dual curve (the baseline's
variance; the dual optimum included), trains every distinct architecture with ``seeds`` seeds
under one recipe, and reports per architecture its parameters, predicted ensemble variance
``V1(n)/m`` (with its bootstrap standard error) and test errors (one per seed, mean, standard
error). Summary per curve: the Spearman rank correlation between predicted variance and mean test
error, with a bootstrap 95% interval that resamples each architecture's seeds; and the primal and
dual optima's error minus the baseline's, each with a paired 95% t-interval over seeds (seed s of
every architecture shares its data order).

Resumable: every run lives in ``OUT/runs/ARCH/seedS``; a rerun with the same ``--out`` reuses a
finished run's ``result.json`` only when it carries this run's family, arch, seed, data
fingerprint and whole recipe, holds a test error in [0, 100] and agrees with its
``metrics.jsonl`` (any other run is redone, with a note), and continues an unfinished one from its
``last.pt`` (started over when that checkpoint cannot be continued). The sweep's settings are
stored in ``OUT/sweep.json``; a rerun with other settings, a corrupt ``sweep.json``, or a folder
holding figure1 outputs or runs of no sweep are refused unless ``overwrite`` (``--overwrite``:
start over). Everything (alpha file, data, curve) is validated and the folder locked
(:func:`collegial.io.folder_lock`) before anything in it changes; the previous runs are deleted
last; a failed start leaves no trace. The command line is
:mod:`collegial.commands.reproduce_figure1`.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from collegial.errors import UserError
from collegial.io import save_figure, strict_json, write_json_atomic, write_text_atomic
from collegial.models import format_arch, get_family, validate_arch
from collegial.provenance import provenance
from collegial.launch import Launcher, run_jobs
from collegial.search.solve import cost_table, dual_m, primal_m, search
from collegial.search.result import SearchResult
from collegial.search.variance import VarianceCurve
from collegial.stats import mean_se

OUT_FILES = ("figure1.json", "figure1.md", "figure1.png")


@dataclass(frozen=True)
class Figure1Config:
    """One sweep. ``n_min``: the smallest width along the curves; ``trials``: Algorithm 1's T when
    it runs here (no ``alpha_file``); ``train_limit``/``test_limit``: images used (None: all)."""

    family: str = "mlp"
    dataset: str = "fashion-mnist"
    baseline: str = "1x128d"
    points: int = 5
    seeds: int = 6
    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.05
    train_limit: int | None = None
    test_limit: int | None = None
    n_min: int = 2
    trials: int = 2000
    alpha_file: str | None = None
    variance: str = "auto"
    seed: int = 0  # Algorithm 1's and the bootstrap's seed; training seeds are 0..seeds-1
    device: str = "cpu"  # where the models train (Algorithm 1 runs on the CPU)

    def key(self) -> dict[str, Any]:
        """What must match for a rerun to continue this sweep."""
        return asdict(self)


#: CPU-sized defaults per family (each ~40 min or less on 2 cores; measured in docs/figure1.md).
#: Any other family starts from mlp's settings on its own ``default_dataset``, with no baseline.
DEFAULTS: dict[str, Figure1Config] = {
    "mlp": Figure1Config(),
    "resnext11": Figure1Config(family="resnext11", baseline="1x64d", seeds=3, epochs=2, train_limit=5000,
                               test_limit=5000),
}
#: ``--quick``: the pipeline in about a minute (what CI runs; not the science).
QUICK = dict(points=3, seeds=2, epochs=1, train_limit=512, test_limit=512, trials=160)


def config_for(family: str, quick: bool = False, **overrides: Any) -> Figure1Config:
    base = DEFAULTS.get(family)
    if base is None:
        base = replace(DEFAULTS["mlp"], family=family, dataset=get_family(family).default_dataset, baseline="")
    if quick:
        base = replace(base, **QUICK)
    over = {k: v for k, v in overrides.items() if v is not None}
    cfg = replace(base, **over)
    _check(cfg)
    return cfg


def _check(cfg: Figure1Config) -> None:
    fam = get_family(cfg.family)
    if fam.arch_kind != "ce":
        raise UserError(f"family {cfg.family!r} has no (m, n) architectures")
    if not cfg.baseline:
        raise UserError(f"family {cfg.family!r} has no default baseline; pass --baseline MxNd")
    _, n_b = validate_arch(cfg.family, cfg.baseline)
    if cfg.alpha_file is None:
        from collegial.ntk.alpha import DEFAULT_WIDTHS

        if not min(DEFAULT_WIDTHS) <= n_b <= max(DEFAULT_WIDTHS):
            raise UserError(f"baseline width {n_b} lies outside Algorithm 1's widths "
                            f"{min(DEFAULT_WIDTHS)}..{max(DEFAULT_WIDTHS)}; pass an --alpha-file that covers it")
    if cfg.points < 2:
        raise UserError(f"--points must be >= 2, got {cfg.points}")
    if cfg.seeds < 2:
        raise UserError(f"--seeds must be >= 2 (errors need a spread), got {cfg.seeds}")
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.n_min < 1:
        raise UserError(f"--n-min must be >= 1, got {cfg.n_min}")
    if cfg.device not in ("cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise UserError(f"unknown --device {cfg.device!r}; choose cpu or cuda")
    if cfg.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {cfg.device}: no CUDA device is available here")


# ------------------------------------------------------------------------------------ points


@dataclass
class Point:
    """One architecture on a curve, with its training outcome (errors in %, one per seed)."""

    arch: str
    m: int
    n: int
    params: int
    variance: float
    variance_se: float
    role: str = ""  # "baseline", "optimum", "baseline+optimum" (the optimum is the baseline) or ""
    errors: list[float] | None = None

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
    """``points`` architectures along the primal and the dual curve of ``res``."""
    tab = cost_table(cfg.family, cfg.dataset)
    n_b = res.baseline.n
    m_b = res.baseline.m
    ns = np.arange(max(cfg.n_min, res.n_range[0]), n_b + 1)
    a = int(tab.fixed("params"))
    b = np.asarray(tab.per_path("params", ns), dtype=np.int64)
    v = curve(ns)
    se = curve.stderr(ns)
    out: dict[str, list[Point]] = {}
    ib = int(np.searchsorted(ns, n_b))
    for prob in ("primal", "dual"):
        ms = primal_m(a, b, res.budget, res.rounding) if prob == "primal" else dual_m(v, v[ib] / m_b)
        ok = ms >= 1
        opt = getattr(res, prob)
        widths = spread_widths([int(n) for n in ns[ok]], [n_b, opt.n], cfg.points)
        pts = []
        for w in widths:
            i = int(np.searchsorted(ns, w))
            m = int(ms[i])
            roles = [r for r, (rm, rn) in (("baseline", (m_b, n_b)), ("optimum", (opt.m, opt.n))) if (m, w) == (rm, rn)]
            role = "+".join(roles)  # "baseline", "optimum", "baseline+optimum" or ""
            pts.append(Point(format_arch(m, w), m, w, int(a + m * b[i]), float(v[i] / m), float(se[i] / m), role))
        out[prob] = pts
    return out


# ---------------------------------------------------------------------------------- training


def _run_identity(cfg: Figure1Config, recipe: Any, data: Any) -> dict[str, Any]:
    """What a run's ``result.json`` must carry to be reused by this sweep (besides its arch and
    seed): the family, the data (name, sizes, fingerprint) and the whole recipe, epochs included."""
    from collegial.train.loop import data_fingerprint

    return json.loads(strict_json({"family": cfg.family, "dataset": cfg.dataset, "epochs": recipe.epochs,
                                   "recipe": recipe.as_dict(), "data": data_fingerprint(data),
                                   "model_kwargs": {}}))


def _read_json(path: Path) -> tuple[Any, str]:
    """``path``'s JSON, or ``(None, "")`` when it does not exist, ``(None, why)`` when it is
    unreadable; :class:`UserError` when it is a folder (or another non-file)."""
    if not path.exists():
        return None, ""
    if not path.is_file():
        raise UserError(f"{path} is not a file; remove it or use another --out")
    try:
        return json.loads(path.read_text()), ""
    except (OSError, ValueError, RecursionError) as e:
        return None, f"{path.name} is unreadable ({type(e).__name__})"


def _reusable(d: Path, expect: dict[str, Any]) -> tuple[float | None, str]:
    """The test error of the finished run in ``d`` when its ``result.json`` is this run's (every
    field of ``expect`` matches), in range and agrees with ``metrics.jsonl``'s last line; else
    ``(None, why)`` and the run is redone. :class:`UserError` if ``result.json`` is no file."""
    r, why = _read_json(d / "result.json")
    if r is None:
        return None, why and f"its {why}"
    try:
        last = json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
    except (OSError, ValueError, IndexError, RecursionError):
        return None, "its metrics.jsonl is unreadable"
    if not isinstance(r, dict) or not isinstance(last, dict):
        return None, "its result.json is no result"
    diff = sorted(k for k, v in expect.items() if r.get(k) != v)
    if diff:
        return None, f"its result.json is another run's ({', '.join(diff)} differ)"
    e = r.get("test_top1_err")
    if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e <= 100:
        return None, f"its test error {e!r} is not a percentage"
    if last.get("test_top1_err") != e or last.get("epoch") != expect["epochs"]:
        return None, "its result.json disagrees with its metrics.jsonl"
    return float(e), ""


def _train_one(cfg: Figure1Config, arch: str, seed: int, root: Path, data: Any, recipe: Any,
               identity: dict[str, Any], log: Any) -> float:
    """Train (or reuse, or continue) run ``arch``/``seed``; its test error in %."""
    from collegial.io import FolderInUse
    from collegial.train.loop import RunConfig, train

    d = root / "runs" / arch / f"seed{seed}"
    err, why = _reusable(d, {**identity, "arch": arch, "seed": seed})
    if err is not None:
        return err
    if why:
        log(f"[figure1] {arch} seed {seed}: redone, {why}")
    run = RunConfig(family=cfg.family, arch=arch, dataset=cfg.dataset, out=d, seed=seed, resume=False,
                    overwrite=True, progress=False, verbose=False, device=cfg.device)
    if not why and (d / "last.pt").exists():
        try:  # an unfinished run continues from its checkpoint
            res = train(replace(run, resume=True, overwrite=False), recipe, data)
        except FolderInUse:
            raise
        except UserError as e:  # nothing was changed: a checkpoint this sweep cannot continue
            log(f"[figure1] {arch} seed {seed}: started over, {e}")
            res = train(run, recipe, data)
    else:
        res = train(run, recipe, data)
    if res.stopped:
        raise UserError(f"run {d} stopped ({res.stopped}); rerun the same command to continue it")
    return float(res.test_top1_err)


def _job(cfg: Figure1Config, arch: str, seed: int, root: Path, recipe: Any, identity: dict[str, Any]) -> float:
    """One run of the sweep as a job of its own (:mod:`collegial.launch`): it loads its data."""
    from collegial.train.data import load_dataset

    data = load_dataset(cfg.dataset, train_limit=cfg.train_limit, test_limit=cfg.test_limit)
    return _train_one(cfg, arch, seed, root, data, recipe, identity, lambda s: None)


def _read_sweep(sweep: Path) -> tuple[dict[str, Any] | None, str]:
    """The settings stored in ``sweep.json`` (``None`` when there is none) and what is wrong
    with it ("" when it is readable)."""
    old, why = _read_json(sweep)
    if old is None:
        return None, why and f"{sweep.parent}/{why}"
    if not isinstance(old, dict) or "family" not in old:
        return None, f"{sweep} is not a figure1 sweep file"
    old.pop("provenance", None)  # where it came from, not a setting
    return old, ""


def _plan(key: dict[str, Any], root: Path, overwrite: bool) -> bool:
    """Check ``root`` against this sweep's settings, changing nothing; whether the sweep starts
    over (its previous runs and outputs to be deleted, once everything else is validated)."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a directory")
    old, bad = _read_sweep(root / "sweep.json")
    if old == key:
        return overwrite
    if old is None and not bad:  # a fresh folder, or one holding files of no sweep
        foreign = [n for n in (*OUT_FILES, "runs") if (root / n).exists()]
        if foreign and not overwrite:
            raise UserError(f"{root} holds {', '.join(foreign)} but no sweep.json (not a figure1 sweep's); "
                            "use another --out or pass --overwrite to replace them")
        return bool(foreign)
    if not overwrite:
        what = bad or ("a figure1 sweep with other settings ("
                       + ", ".join(sorted(k for k in set(old or {}) | set(key) if (old or {}).get(k) != key.get(k)))
                       + ")")
        raise UserError(f"{root} holds {what}; use another --out, the same settings to continue it, "
                        "or --overwrite to start over")
    return True


def _start(key: dict[str, Any], root: Path, start_over: bool) -> None:
    """Delete the previous sweep (``start_over``), then record this one's settings."""
    if start_over:
        shutil.rmtree(root / "runs", ignore_errors=True)
        for name in OUT_FILES:
            (root / name).unlink(missing_ok=True)
    write_json_atomic(root / "sweep.json", {**key, "provenance": provenance(key.get("seed"))})


def _check_data(cfg: Figure1Config, data: Any, recipe: Any) -> None:
    """The data holds a full training batch (every run would fail otherwise)."""
    n = int(data.train_y.numel())
    if n < recipe.batch_size:
        raise UserError(f"--train-limit leaves {n} training images, fewer than one batch of {recipe.batch_size}")


def run_figure1(cfg: Figure1Config, out: Path, *, overwrite: bool = False, progress: bool = True,
                inputs: Any = None, launcher: Launcher | None = None) -> dict[str, Any]:
    """Run (or continue) the sweep into ``out``; returns the ``figure1.json`` object. Every
    setting (the alpha file and the data included) is validated, and the sweep folder locked,
    before anything in ``out`` changes; a failed start leaves no trace. ``launcher``: where the
    runs execute (:mod:`collegial.launch`; default: one after another in this process)."""
    from collegial.io import folder_lock
    from collegial.ntk.inputs import ProbeInputs
    from collegial.train.data import load_dataset
    from collegial.train.recipes import get_recipe

    _check(cfg)
    recipe = get_recipe(cfg.dataset).override(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
    recipe = recipe.scaled(cfg.epochs)
    inputs = ProbeInputs() if inputs is None else inputs
    key = {**cfg.key(), "probe_inputs": None if cfg.alpha_file else inputs.options()}
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    data = load_dataset(cfg.dataset, train_limit=cfg.train_limit, test_limit=cfg.test_limit)
    _check_data(cfg, data, recipe)
    created, locked = not out.exists(), (out / ".lock").exists()
    try:
        with folder_lock(out, "figure1 sweep", arg="out"):
            return _sweep(cfg, out, key, overwrite, data, recipe, inputs, progress, launcher or Launcher())
    except UserError:
        if not locked and not (out / "sweep.json").exists():  # a failed start leaves no trace
            (out / ".lock").unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    out.rmdir()
        raise


def _sweep(cfg: Figure1Config, out: Path, key: dict[str, Any], overwrite: bool, data: Any, recipe: Any,
           inputs: Any, progress: bool, launcher: Launcher) -> dict[str, Any]:
    """:func:`run_figure1` once the sweep folder is locked."""
    from collegial.search.variance import load_curve

    start_over = _plan(key, out, overwrite)
    t0 = time.time()
    curve = load_curve(cfg.alpha_file, cfg.variance, family=cfg.family,
                       trials=cfg.trials, seed=cfg.seed, inputs=inputs)
    res = search(cfg.family, cfg.dataset, cfg.baseline, curve, budget="params")
    curves = curve_points(res, curve, cfg)
    identity = _run_identity(cfg, recipe, data)
    _start(key, out, start_over)  # everything validated: only now delete and write
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    archs = sorted({p.arch for pts in curves.values() for p in pts}, key=lambda s: (len(s), s))
    errors: dict[str, list[float]] = {a: [] for a in archs}
    total = len(archs) * cfg.seeds
    if launcher.in_process:  # one after another, with the data loaded once
        k = 0
        for arch in archs:
            for s in range(cfg.seeds):
                k += 1
                t = time.time()
                e = _train_one(cfg, arch, s, out, data, recipe, identity, log)
                errors[arch].append(e)
                log(f"[figure1] {k}/{total} {cfg.family} {arch} seed {s}: {e:.2f}% test error "
                    f"({time.time() - t:.0f} s; {time.time() - t0:.0f} s in all)")
    else:  # each run a job (it loads its data): K processes here, or a submitit job array
        log(f"[figure1] {total} runs through the {launcher.kind} launcher"
            + (f" ({launcher.jobs} at once)" if launcher.kind == "local" else ""))
        calls = [(cfg, arch, s, out, recipe, identity) for arch in archs for s in range(cfg.seeds)]
        for (_, arch, _, _, _, _), e in zip(calls, run_jobs(_job, calls, launcher, out / "submitit")):
            errors[arch].append(e)
        log(f"[figure1] {total} runs done ({time.time() - t0:.0f} s)")
    for pts in curves.values():
        for p in pts:
            p.errors = errors[p.arch]
    obj = summarize(cfg, res, curves, recipe, time.time() - t0)
    obj["provenance"] = provenance(cfg.seed)
    write_outputs(obj, curves, out)
    return obj


# ---------------------------------------------------------------------------------- statistics


def spearman_interval(points: list[Point], draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """Spearman rho between predicted variance and mean error, and its bootstrap 95% interval
    (each architecture's seeds resampled with replacement)."""
    from scipy.stats import spearmanr

    v = np.array([p.variance for p in points])
    e = [np.asarray(p.errors, dtype=float) for p in points]
    rho = float(spearmanr(v, [x.mean() for x in e]).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(draws):
        means = [x[rng.integers(0, x.size, x.size)].mean() for x in e]
        r = spearmanr(v, means).statistic
        if np.isfinite(r):
            boots.append(r)
    lo, hi = (np.quantile(boots, [0.025, 0.975]) if boots else (math.nan, math.nan))
    return {"rho": rho, "lo": float(lo), "hi": float(hi), "points": len(points)}


def paired_difference(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of ``a - b`` over seeds and its 95% t-interval (paired by seed)."""
    from scipy.stats import t as student_t

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(d.mean())
    if d.size < 2 or np.all(d == d[0]):
        return {"mean": mean, "lo": mean, "hi": mean, "seeds": int(d.size)}
    half = float(student_t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "seeds": int(d.size)}


def summarize(cfg: Figure1Config, res: SearchResult, curves: dict[str, list[Point]], recipe: Any,
              seconds: float) -> dict[str, Any]:
    base = next(p for p in curves["primal"] if "baseline" in p.role)
    obj: dict[str, Any] = {
        "config": cfg.key(),
        "recipe": recipe.as_dict(),
        "probe": res.probe,
        "alpha_file": res.alpha_file,  # path, SHA-256 and provenance of the curve used
        "variance_model": res.variance_model,
        "baseline": base.to_dict(),
        "curves": {},
        "seconds": seconds,
    }
    for prob, pts in curves.items():
        opt = next(p for p in pts if "optimum" in p.role)
        rows = []
        for p in pts:  # every point against the baseline, paired by seed
            row = p.to_dict()
            row["minus_baseline"] = paired_difference(p.errors or [], base.errors or [])
            rows.append(row)
        obj["curves"][prob] = {
            "points": rows,
            "spearman": spearman_interval(pts, seed=cfg.seed),
            "optimum": opt.arch,
        }
        obj[f"{prob}_minus_baseline"] = {"arch": opt.arch, "is_baseline": opt.arch == base.arch,
                                         **paired_difference(opt.errors or [], base.errors or [])}
    return obj


# ----------------------------------------------------------------------------------- outputs


def markdown(obj: dict[str, Any]) -> str:
    c = obj["config"]
    lines = [
        f"# Figure 1 at CPU scale: {c['family']} on {c['dataset']}, baseline {c['baseline']}",
        "",
        f"{c['seeds']} seeds, {c['epochs']} epochs, batch {c['batch_size']}, lr {c['lr']}, "
        f"train images: {c['train_limit'] or 'all'}, test images: {c['test_limit'] or 'all'}; "
        f"variance model {obj['variance_model']}; probe: {obj['probe']}; {obj['seconds']:.0f} s.",
        "",
    ]
    for prob in ("primal", "dual"):
        cur = obj["curves"][prob]
        sp = cur["spearman"]
        d = obj[f"{prob}_minus_baseline"]
        lines += [
            f"## {prob} curve ({'equal parameters' if prob == 'primal' else 'the baseline variance'})",
            "",
            "| model | role | params | predicted variance | test error % (mean ± s.e.) | minus baseline [95%] | per seed |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in cur["points"]:
            mb = p["minus_baseline"]
            diff = "-" if "baseline" in p["role"] else f"{mb['mean']:+.2f} [{mb['lo']:+.2f}, {mb['hi']:+.2f}]"
            lines.append(
                f"| {p['arch']} | {p['role'] or '-'} | {p['params'] / 1e3:.0f}k | {p['variance']:.4g} ± {p['variance_se']:.2g} "
                f"| {p['error_mean']:.2f} ± {p['error_se']:.2f} | {diff} | {', '.join(f'{e:.2f}' for e in p['errors'])} |"
            )
        lines += [
            "",
            f"Spearman(variance, error) = {sp['rho']:.2f} [95% bootstrap interval {sp['lo']:.2f}, {sp['hi']:.2f}] "
            f"over {sp['points']} models; "
            + (f"the {prob} optimum is the baseline itself ({d['arch']}): no difference to measure."
               if d["is_baseline"] else
               f"the {prob} optimum {d['arch']} minus the baseline: {d['mean']:+.2f} points "
               f"[95% interval {d['lo']:+.2f}, {d['hi']:+.2f}] (paired by seed)."),
            "",
        ]
    return "\n".join(lines)


def plot(obj: dict[str, Any], path: Path) -> None:
    """Test error against n along each curve (error bars: s.e. over seeds), the predicted
    variance on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    for ax, prob in zip(axes, ("primal", "dual")):
        pts = obj["curves"][prob]["points"]
        n = [p["n"] for p in pts]
        ax.errorbar(n, [p["error_mean"] for p in pts], [p["error_se"] for p in pts], marker="o", capsize=3,
                    color="C0", label="test error (mean ± s.e.)")
        for p in pts:  # the widest point's label goes left, clear of the second axis
            ax.annotate(p["arch"] + (f" ({p['role']})" if p["role"] else ""), (p["n"], p["error_mean"]),
                        textcoords="offset points", xytext=(-90, 8) if p["n"] == max(n) else (4, 5),
                        fontsize=6.5)
        ax2 = ax.twinx()
        ax2.errorbar(n, [p["variance"] for p in pts], [p["variance_se"] for p in pts], marker="s", ls="--",
                     color="C3", capsize=2, ms=3, label="predicted variance V1(n)/m")
        vs = [p["variance"] for p in pts]
        if max(vs) > 3 * min(vs):  # a wide range (the primal curve): log scale
            ax2.set_yscale("log")
        ax2.set_ylabel("predicted variance V1(n)/m", color="C3", fontsize=8)
        ax2.tick_params(axis="y", labelsize=7)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width n")
        ax.set_ylabel("test top-1 error %", color="C0", fontsize=8)
        sp = obj["curves"][prob]["spearman"]
        ax.set_title(f"{prob} curve: Spearman {sp['rho']:.2f} [{sp['lo']:.2f}, {sp['hi']:.2f}]", fontsize=9)
        ax.grid(True, alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    c = obj["config"]
    fig.suptitle(f"{c['family']} on {c['dataset']}, baseline {c['baseline']}, {c['seeds']} seeds", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(obj: dict[str, Any], curves: dict[str, list[Point]], out: Path) -> list[Path]:
    write_json_atomic(out / "figure1.json", obj)
    write_text_atomic(out / "figure1.md", markdown(obj) + "\n")
    plot(obj, out / "figure1.png")
    return [out / n for n in OUT_FILES]
