"""The training loop: SGD as the recipe says, cross-entropy, top-1/top-5 test error every epoch.

:func:`train`, in the spirit of nanoGPT / airbench, reads top to bottom: build the model and its
optimizer, the loaders, resume, then per epoch train (:func:`_train_epoch`), evaluate, record,
checkpoint; finally the result. The pieces it passes around are small frozen records:
:class:`_Context` (the settings), :class:`_Trainee` (model, optimizer, schedule),
:class:`_Loaders`, :class:`~collegial.train.checkpoint.Position` and
:class:`~collegial.train.checkpoint.EpochSums`; the history is a list of the epochs' records.

* data: :class:`~collegial.train.loader.DeviceLoader` (uint8 images on the device, crop and flip
  per batch there; one deterministic order per ``(seed, epoch)``, sharded under DDP); with
  ``val_images``, a validation split held out of the training images
  (:func:`~collegial.train.images.hold_out`) evaluated each epoch;
* model: ``collegial.models.create_model``, optionally channels_last, bf16 autocast
  (``amp``) and ``torch.compile``; DistributedDataParallel when launched by torchrun;
* every epoch: evaluation, one line of ``DIR/metrics.jsonl`` and an atomic ``DIR/last.pt``
  (rank 0); SIGTERM writes a checkpoint at the next step and stops; ``resume`` continues from
  ``DIR/last.pt`` bit for bit (same batches, same RNG, same optimizer state);
* a non-finite loss stops the run with :class:`TrainingDiverged` (a ``UserError``) and leaves
  the last good checkpoint alone.

The run's folder (its files, lock and metrics) is :mod:`collegial.train.run_folder`; what a
checkpoint holds, :mod:`collegial.train.checkpoint`.

Deterministic mode (default on the CPU): ``torch.use_deterministic_algorithms(True)``; on the
CPU with a fixed thread count a run is then reproducible bit for bit, including across a
kill + resume.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from collegial.errors import UserError
from collegial.io import strict_json, write_json_atomic
from collegial.models import create_model, get_dataset_spec
from collegial.models.costs import format_flops, format_params, train_flops_per_image
from collegial.provenance import provenance
from collegial.train.checkpoint import (
    EpochSums,
    Position,
    check_resumable,
    read_position,
    run_checkpoint,
    save_atomic,
    set_rng_state,
)
from collegial.train.distributed import (
    Dist,
    all_reduce_sum,
    any_rank,
    barrier,
    setup,
    wrap_ddp,
)
from collegial.train.flops import peak_flops
from collegial.train.images import (
    HeldOut,
    ImageData,
    data_fingerprint,
    hold_out,
    normalization_stats,
)
from collegial.train.loader import DeviceLoader
from collegial.train.recipes import Recipe
from collegial.train.report import (
    Meter,
    RunResult,
    TrainedEpoch,
    epoch_line,
    epoch_record,
    evaluate,
    run_result,
)
from collegial.train.run_folder import (
    RUN_FILES,
    check_out_dir,
    metrics_csv,
    metrics_text,
    prepare_out,
    run_lock,
    start_out,
    write_metrics,
)
from collegial.train.runtime import StopSignal, cpu_has_bf16, deterministic_algorithms

__all__ = [
    "RUN_FILES",
    "RunConfig",
    "RunResult",
    "TrainingDiverged",
    "check_out_dir",
    "data_fingerprint",
    "evaluate",
    "train",
]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run that is not the recipe or the data.

    ``deterministic=None`` means on for the CPU, off for CUDA. ``sync_every`` (steps between
    host syncs for the loss check, progress bar and SIGTERM; default 1 on the CPU, 50 on CUDA).
    ``peak_tflops`` sets the MFU denominator (auto for known GPUs; none on the CPU).
    ``val_images``: that many training images held out of training and evaluated each epoch
    (``val_*`` metrics), the same images for every seed (:func:`~collegial.train.data.hold_out`);
    0: none, every training image is trained on.
    """

    family: str
    arch: str
    dataset: str
    out: Path
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    deterministic: bool | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = False
    verbose: bool = True
    eval_batch_size: int = 256
    #: also write TensorBoard events (``out/tensorboard``) each epoch (needs the ``tensorboard`` package)
    tensorboard: bool = False
    sync_every: int | None = None
    peak_tflops: float | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    val_images: int = 0


# ---- the records a run passes around --------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """The settings every step of a run reads; ``stop`` is the flag SIGTERM / SIGINT set."""

    cfg: RunConfig
    recipe: Recipe
    info: Dist
    device: torch.device
    stop: StopSignal

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def sync_every(self) -> int:
        return self.cfg.sync_every or (1 if self.device.type == "cpu" else 50)


@dataclass(frozen=True)
class _Trainee:
    """``net`` trains (DDP and/or compiled), ``eval_net`` evaluates (``model``, maybe compiled);
    ``model`` is the bare module whose ``state_dict`` goes into checkpoints."""

    model: nn.Module
    net: nn.Module
    eval_net: nn.Module
    opt: torch.optim.Optimizer
    sched: LRScheduler
    params: int

    def states(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict()}


@dataclass(frozen=True)
class _Loaders:
    train: DeviceLoader
    test: DeviceLoader
    val: DeviceLoader | None  # None without held-out validation images


@dataclass(frozen=True)
class _Synced:
    """The sums over ranks at a host sync, whether any loss was non-finite, and the stop vote."""

    sums: EpochSums
    nonfinite: bool
    stop: bool


# ---- the run --------------------------------------------------------------------------------


def train(cfg: RunConfig, recipe: Recipe, data: ImageData) -> RunResult:
    """Train ``cfg.family`` ``cfg.arch`` on ``data`` with ``recipe``; see the module docstring.

    Writes ``cfg.out/{config.json, metrics.jsonl, metrics.csv, last.pt, result.json}`` (rank 0).
    Raises :class:`UserError` for unusable settings and :class:`TrainingDiverged` on a non-finite
    loss.
    """
    info, device = setup(cfg.device)
    log = _logger(cfg.verbose and info.is_main)
    _check_settings(cfg, data)
    held = hold_out(data, cfg.val_images)
    out = Path(cfg.out)
    deterministic = cfg.deterministic if cfg.deterministic is not None else device.type == "cpu"
    with run_lock(out, info), deterministic_algorithms(deterministic, device), StopSignal().installed() as stop:
        ctx = _Context(cfg, recipe, info, device, stop)
        ckpt, stale = prepare_out(out, resume=cfg.resume, overwrite=cfg.overwrite)
        trainee = _build(ctx)
        config = _run_config(ctx, trainee.params, data)
        loaders = _loaders(ctx, data, held)
        pos, history = Position(), []
        if ckpt is not None:
            pos, history = _resume(trainee, ckpt, config, out / "last.pt")
            log(_resuming_line(out, pos, recipe.epochs))
        elif cfg.resume:
            log(f"--resume: {out} holds no run yet; starting it")
        # every setting has been validated: only now start over (delete the old run) or go on
        start_out(out, stale, info, {
            "config.json": strict_json({**config, "provenance": provenance(cfg.seed)}, indent=2) + "\n",
            "metrics.jsonl": metrics_text(history),
            "metrics.csv": metrics_csv(history),
        })
        meter = _meter(cfg, device)
        for line in _summary_lines(ctx, data.name, trainee.params, len(loaders.train), meter):
            log(line)
        trainee.net.train()
        while pos.epoch < recipe.epochs:
            trained = _train_epoch(ctx, trainee, loaders.train, pos)
            if trained.stopped:  # SIGTERM / SIGINT mid-epoch: checkpoint this exact position
                _save(ctx, run_checkpoint(trainee.states(), trained.stopped_at, history, config))
                stop.acknowledge()
                log(f"{stop.signal}: stopped at epoch {trained.epoch + 1} step {trained.steps}/"
                    f"{len(loaders.train)}; checkpoint {out / 'last.pt'}; continue with --resume")
                return run_result(out, trainee.params, history, stop.signal)
            trainee.sched.step()
            history.append(epoch_record(trained, _evaluate_all(ctx, trainee, loaders), meter))
            pos = Position(epoch=trained.epoch + 1)
            _save(ctx, run_checkpoint(trainee.states(), pos, history, config))
            if info.is_main:
                write_metrics(out, history, tensorboard=cfg.tensorboard)
            log(epoch_line(history[-1], recipe.epochs, meter))
            if pos.epoch < recipe.epochs and any_rank(stop.requested, info, device):
                stop.acknowledge()
                log(f"{stop.signal}: stopped after epoch {pos.epoch}; checkpoint {out / 'last.pt'}; "
                    "continue with --resume")
                return run_result(out, trainee.params, history, stop.signal)
        return _write_result(ctx, trainee.params, history, config)


def _logger(enabled: bool) -> Callable[[str], None]:
    """Print a line (flushed) when ``enabled`` (``verbose``, rank 0), else nothing."""
    return (lambda s: print(s, flush=True)) if enabled else (lambda s: None)


def _check_settings(cfg: RunConfig, data: ImageData) -> None:
    """:class:`UserError` unless ``data`` has the images and classes the model expects and the
    evaluation batch size is positive."""
    spec = get_dataset_spec(cfg.dataset)
    if (data.in_channels, data.resolution, data.num_classes) != (
        spec.in_channels,
        spec.resolution,
        spec.num_classes,
    ):
        raise UserError(
            f"data {data.name!r} has {data.in_channels}x{data.resolution}^2 images and "
            f"{data.num_classes} classes; the {spec.name} model expects {spec.in_channels}x"
            f"{spec.resolution}^2 and {spec.num_classes}"
        )
    if cfg.eval_batch_size < 1:
        raise UserError(f"eval batch size must be >= 1, got {cfg.eval_batch_size}")
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        except ImportError:
            raise UserError("TensorBoard events need the tensorboard package: pip install 'collegial[tensorboard]'") from None


# ---- build and resume -----------------------------------------------------------------------


def _build(ctx: _Context) -> _Trainee:
    """Model (seeded by the run's seed), optimizer and schedule on the device, wrapped for DDP /
    ``torch.compile``; nothing on disk changes here."""
    cfg = ctx.cfg
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.family, arch=cfg.arch, dataset=cfg.dataset, **cfg.model_kwargs)
    params = sum(p.numel() for p in model.parameters())
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device=ctx.device, memory_format=fmt)
    opt = ctx.recipe.optimizer(model.parameters())
    sched = ctx.recipe.schedule(opt)
    net = wrap_ddp(model, ctx.info, ctx.device)
    eval_net: nn.Module = model
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]
        eval_net = torch.compile(model)  # type: ignore[assignment]
    return _Trainee(model=model, net=net, eval_net=eval_net, opt=opt, sched=sched, params=params)


def _run_config(ctx: _Context, params: int, data: ImageData) -> dict[str, Any]:
    """What the run is (``config.json``, and the checkpoint's ``config`` a resume must match)."""
    cfg = ctx.cfg
    return {
        "family": cfg.family,
        "arch": cfg.arch,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "recipe": ctx.recipe.as_dict(),
        "world_size": ctx.info.world_size,
        "device": cfg.device,
        "amp": cfg.amp,
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "model_kwargs": dict(cfg.model_kwargs),
        "params": params,
        "val_images": cfg.val_images,
        "data": data_fingerprint(data),
    }


def _loaders(ctx: _Context, data: ImageData, held: HeldOut) -> _Loaders:
    """The training loader over ``held.train_x`` (global batch, augmentation and shuffling of the
    recipe), the test loader and the validation loader (both ``eval_batch_size`` per process),
    all on the device and sharded over ranks. The normalization is that of all of ``data``'s
    training images, held out or not."""
    mean, std = normalization_stats(data, ctx.recipe.normalization)
    common: dict[str, Any] = dict(mean=mean, std=std, device=ctx.device, generator_seed=ctx.cfg.seed,
                                  rank=ctx.info.rank, world_size=ctx.info.world_size,
                                  channels_last=ctx.cfg.channels_last)
    recipe, batch = ctx.recipe, ctx.cfg.eval_batch_size
    return _Loaders(
        train=DeviceLoader(held.train_x, held.train_y, global_batch_size=recipe.batch_size, train=True,
                           crop_padding=recipe.crop_padding, flip=recipe.flip, **common),
        test=DeviceLoader(data.test_x, data.test_y, batch_size=batch, train=False, **common),
        val=DeviceLoader(held.val_x, held.val_y, batch_size=batch, train=False, **common)
        if held.num_val else None,
    )


def _resume(
    trainee: _Trainee, ckpt: dict[str, Any], config: dict[str, Any], path: Path
) -> tuple[Position, list[dict[str, Any]]]:
    """Check that checkpoint ``ckpt`` (read from ``path``) continues this run (``config``), load
    its model, optimizer, schedule and RNG states, and return where it stopped and its history."""
    check_resumable(ckpt, config, path)
    try:
        trainee.model.load_state_dict(ckpt["model"])
        trainee.opt.load_state_dict(ckpt["optimizer"])
        trainee.sched.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} does not fit this run ({first}); use `overwrite=True`") from None
    return read_position(ckpt)


def _resuming_line(out: Path, pos: Position, epochs: int) -> str:
    # epochs counted from 1, as every other message does ("stopped at epoch 1 step 217/468")
    where = f"epoch {pos.epoch + 1} step {pos.batch}" if pos.batch else f"the start of epoch {pos.epoch + 1}"
    return f"resuming {out / 'last.pt'} at {where} ({pos.epoch} of {epochs} epochs done)"


def _meter(cfg: RunConfig, device: torch.device) -> Meter:
    try:
        flops = train_flops_per_image(cfg.family, cfg.arch, cfg.dataset, **cfg.model_kwargs)
    except Exception:  # noqa: BLE001 - FLOPs are informative only; a model may not trace
        flops = None
    return Meter(flops, cfg.peak_tflops * 1e12 if cfg.peak_tflops else peak_flops(device, cfg.amp))


def _summary_lines(ctx: _Context, name: str, params: int, steps: int, meter: Meter) -> list[str]:
    """The run's one-line summary (and a note when bf16 autocast runs on a CPU without native
    bf16)."""
    cfg, recipe, info, device, flops = ctx.cfg, ctx.recipe, ctx.info, ctx.device, meter.flops_per_image
    lines = [
        f"{cfg.family} {cfg.arch} on {name}: {format_params(params)} params"
        + (f", {format_flops(flops / 3)}/image fwd" if flops else "")
        + f"; {recipe.epochs} epochs x {steps} steps of {recipe.batch_size}"
        + (f" ({info.world_size} processes)" if info.enabled else "")
        + (f"; {cfg.val_images} training images held out for validation" if cfg.val_images else "")
        + f"; {device}"
        + (" bf16" if cfg.amp else "")
        + (" channels_last" if cfg.channels_last else "")
        + (" compile" if cfg.compile else "")
    ]
    if cfg.amp and device.type == "cpu" and not cpu_has_bf16():
        lines.append(
            "note: this CPU has no native bf16 (AVX512-BF16 / AMX): bf16 autocast runs much "
            "slower than fp32 here (see bench/RESULTS.md); consider dropping --amp"
        )
    return lines


# ---- one epoch ------------------------------------------------------------------------------


def _train_epoch(ctx: _Context, trainee: _Trainee, loader: DeviceLoader, start: Position) -> TrainedEpoch:
    """Train epoch ``start.epoch`` from its batch ``start.batch`` on (with that epoch's sums so
    far), up to its end or to the step where SIGTERM / SIGINT stops it.

    Every ``sync_every`` steps (and at the end) one host sync sums the counts over ranks, checks
    the loss (:class:`TrainingDiverged`), moves the progress bar and polls the stop flag -- the
    same decision on every rank.
    """
    loader.set_epoch(start.epoch, start_batch=start.batch)
    lr = trainee.opt.param_groups[0]["lr"]
    acc = _accumulator(ctx, start.partial)
    synced = _sync(ctx, acc)
    bar = _progress_bar(ctx, start, len(loader))
    t0 = t_sync = time.perf_counter()
    for step, (x, y) in enumerate(loader, start=start.batch):
        _train_step(trainee, x, y, acc, ctx.cfg.amp)
        done = step + 1
        if done % ctx.sync_every and done != len(loader):
            continue
        previous, synced = synced, _sync(ctx, acc)
        now = time.perf_counter()
        if synced.nonfinite:
            bar.close()
            raise _diverged(ctx.out, start.epoch, done)
        bar.update(done - bar.n)
        speed = (synced.sums.images - previous.sums.images) / max(now - t_sync, 1e-9)
        bar.set_postfix(loss=f"{synced.sums.mean_loss:.4f}", img_s=f"{speed:.1f}", refresh=False)
        t_sync = now
        if synced.stop:
            bar.close()
            sums = dataclasses.replace(synced.sums, seconds=start.partial.seconds + (now - t0))
            return TrainedEpoch(start.epoch, lr, sums, done, stopped=True)
    bar.close()
    sums = dataclasses.replace(synced.sums, seconds=start.partial.seconds + (time.perf_counter() - t0))
    return TrainedEpoch(start.epoch, lr, sums, len(loader))


def _accumulator(ctx: _Context, partial: EpochSums) -> torch.Tensor:
    """This rank's running sums on the device: loss * n, correct, images, non-finite losses. The
    epoch's partial sums (from a mid-epoch checkpoint) count on rank 0."""
    acc = torch.zeros(4, dtype=torch.float64, device=ctx.device)
    if ctx.info.is_main:
        # float64: a float32 tensor here rounded the partial loss sum (resume not bit-exact)
        acc[:3] = torch.tensor([partial.loss, partial.correct, partial.images], dtype=torch.float64)
    return acc


def _sync(ctx: _Context, acc: torch.Tensor) -> _Synced:
    """One host sync: the sums of ``acc`` over ranks and the stop vote (a collective)."""
    tot = all_reduce_sum(torch.cat([acc, acc.new_tensor([float(ctx.stop.requested)])]), ctx.info).tolist()
    return _Synced(EpochSums(loss=tot[0], correct=tot[1], images=tot[2]), tot[3] > 0, tot[4] > 0)


def _train_step(trainee: _Trainee, x: torch.Tensor, y: torch.Tensor, acc: torch.Tensor, amp: bool) -> None:
    """One optimizer step on the batch ``(x, y)``; adds its loss * n, correct predictions,
    images and non-finite loss (0 or 1) to ``acc`` (on the device, no host sync)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = trainee.net(x)
        loss = F.cross_entropy(logits, y)
    trainee.opt.zero_grad(set_to_none=True)
    loss.backward()
    trainee.opt.step()
    with torch.no_grad():
        ld = loss.detach().double()
        acc += torch.stack(
            [
                ld * len(y),
                (logits.argmax(1) == y).sum().double(),
                ld.new_tensor(float(len(y))),
                (~torch.isfinite(ld)).double(),
            ]
        )


def _progress_bar(ctx: _Context, start: Position, steps: int) -> tqdm:
    """The epoch's progress bar on stderr: only with ``cfg.progress``, on rank 0, and when
    stderr is a terminal (never into a log file)."""
    return tqdm(
        total=steps,
        initial=start.batch,
        desc=f"epoch {start.epoch + 1}/{ctx.recipe.epochs}",
        unit="step",
        leave=False,
        dynamic_ncols=True,
        disable=not (ctx.cfg.progress and ctx.info.is_main and _stderr_is_terminal()),
    )


def _stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` (where tqdm writes) is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def _diverged(out: Path, epoch: int, done: int) -> TrainingDiverged:
    """The error for a non-finite loss at (0-based) ``epoch`` after ``done`` steps (the last
    good checkpoint, if any, holds the ``epoch`` epochs before it)."""
    last = out / "last.pt"
    kept = f"{last} (epoch {epoch})" if last.exists() else "none written yet"
    return TrainingDiverged(
        f"loss is not finite at epoch {epoch + 1} step {done}; stopped "
        f"(last good checkpoint: {kept}); try a lower `lr`"
    )


# ---- evaluate --------------------------------------------------------------------


def _evaluate_all(ctx: _Context, trainee: _Trainee, loaders: _Loaders) -> tuple[dict[str, float], float]:
    """The test metrics (and the validation metrics with held-out images) and the seconds they
    took."""
    t0 = time.perf_counter()
    amp = ctx.cfg.amp
    metrics = evaluate(trainee.eval_net, loaders.test, ctx.info, amp=amp)
    if loaders.val is not None:
        metrics.update(evaluate(trainee.eval_net, loaders.val, ctx.info, amp=amp, split="val"))
    return metrics, time.perf_counter() - t0


# ---- checkpoint and result ------------------------------------------------------------------


def _save(ctx: _Context, checkpoint: dict[str, Any]) -> None:
    """Write ``out/last.pt`` atomically (rank 0); every rank waits for it."""
    if ctx.info.is_main:
        save_atomic(checkpoint, ctx.out / "last.pt")
    barrier(ctx.info)


def _write_result(ctx: _Context, params: int, history: list[dict[str, Any]], config: dict[str, Any]) -> RunResult:
    """The finished run's result; rank 0 writes it to ``out/result.json``."""
    cfg, res = ctx.cfg, run_result(ctx.out, params, history)
    if ctx.info.is_main:
        write_json_atomic(ctx.out / "result.json", {
            "family": cfg.family,
            "arch": cfg.arch,
            "dataset": cfg.dataset,
            "seed": cfg.seed,
            "params": params,
            "epochs": res.epochs,
            "test_top1_err": res.test_top1_err,
            "test_top5_err": res.test_top5_err,
            "test_loss": res.test_loss,
            "val_images": cfg.val_images,
            "val_top1_err": res.val_top1_err,
            "val_top5_err": res.val_top5_err,
            "val_loss": res.val_loss,
            # what produced it, so that a reader (figure1) can check a reused result is its own
            "recipe": config.get("recipe"),
            "data": config.get("data"),
            "model_kwargs": config.get("model_kwargs"),
            "provenance": provenance(cfg.seed),
        }, indent=2)
    barrier(ctx.info)
    return res
