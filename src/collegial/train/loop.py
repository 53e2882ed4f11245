"""The training loop: SGD as the recipe says, cross-entropy, top-1/top-5 test error every epoch.

:func:`train`, in the spirit of nanoGPT / airbench, is a short sequence of explicit steps
(:func:`_build`, :func:`_resume`, :func:`_train_epoch`, :func:`_finish_epoch`,
:func:`_checkpoint`, :func:`_write_result`):

* data: :class:`~collegial.train.data.DeviceLoader` (uint8 images on the device, crop and flip
  per batch there; one deterministic order per ``(seed, epoch)``, sharded under DDP);
* model: ``collegial.models.create_model``, optionally channels_last, bf16 autocast
  (``amp``) and ``torch.compile``; DistributedDataParallel when launched by torchrun;
* every epoch: evaluation, one line of ``DIR/metrics.jsonl`` and an atomic ``DIR/last.pt``
  (rank 0); SIGTERM writes a checkpoint at the next step and stops; ``resume`` continues from
  ``DIR/last.pt`` bit for bit (same batches, same RNG, same optimizer state);
* a non-finite loss stops the run with :class:`TrainingDiverged` (a ``UserError``) and leaves
  the last good checkpoint alone.

Deterministic mode (default on the CPU): ``torch.use_deterministic_algorithms(True)``; on the
CPU with a fixed thread count a run is then reproducible bit for bit, including across a
kill + resume.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from collegial.errors import UserError
from collegial.io import TMP_GLOB, folder_lock, strict_json, write_json_atomic, write_text_atomic
from collegial.provenance import provenance
from collegial.models import create_model, get_dataset_spec
from collegial.models.costs import format_flops, format_params, train_flops_per_image
from collegial.train.checkpoint import (
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from collegial.train.data import DeviceLoader, HeldOut, ImageData, hold_out, normalization_stats
from collegial.train.distributed import Dist, all_reduce_sum, barrier, setup, wrap_ddp
from collegial.train.flops import peak_flops
from collegial.train.recipes import Recipe

__all__ = [
    "RUN_FILES",
    "RunConfig",
    "RunResult",
    "TrainingDiverged",
    "check_out_dir",
    "evaluate",
    "train",
]

#: Files a run writes into its directory (never overwritten unless resuming or ``overwrite``).
RUN_FILES = ("last.pt", "metrics.jsonl", "metrics.csv", "result.json", "config.json", "tensorboard")
CHECKPOINT_FORMAT = 1


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


@dataclass(frozen=True)
class RunResult:
    """What a finished (or stopped) run reports; errors in %. The ``val_*`` metrics (of the
    last epoch) are ``None`` unless the run held out validation images."""

    out: Path
    epochs: int
    test_top1_err: float
    test_top5_err: float
    test_loss: float
    params: int
    history: list[dict[str, Any]]
    stopped: str | None = None  # "SIGTERM" or "SIGINT" when stopped early (after a checkpoint)
    val_top1_err: float | None = None
    val_top5_err: float | None = None
    val_loss: float | None = None


# ---- small pieces ---------------------------------------------------------------------------


class _StopOnSigterm:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the loop polls, so both end in a checkpoint;
    a second Ctrl-C interrupts at once. Only installable from the main thread."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.signal = "SIGTERM"
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop without waiting for the checkpoint
        self.requested = True
        self.signal = signal.Signals(signum).name

    @contextmanager
    def installed(self) -> Iterator[_StopOnSigterm]:
        main = threading.current_thread() is threading.main_thread()
        if main:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            if main:
                for sig, prev in self._previous.items():
                    signal.signal(sig, prev)


@contextmanager
def _deterministic(enabled: bool, device: torch.device) -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.benchmark = prev_bench


def _run_config_dict(cfg: RunConfig, recipe: Recipe, info: Dist, params: int) -> dict[str, Any]:
    return {
        "family": cfg.family,
        "arch": cfg.arch,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "recipe": recipe.as_dict(),
        "world_size": info.world_size,
        "device": cfg.device,
        "amp": cfg.amp,
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "model_kwargs": dict(cfg.model_kwargs),
        "params": params,
        "val_images": cfg.val_images,
    }


def data_fingerprint(data: ImageData) -> dict[str, Any]:
    """What identifies the data a run trains on: its name, split sizes and a SHA-1 of its labels
    and of at most 4096 evenly spaced images per split (cheap even for ImageNet32)."""
    h = hashlib.sha1()
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        step = max(1, x.shape[0] // 4096)
        h.update(x[::step].contiguous().numpy().tobytes())
        h.update(y.numpy().tobytes())
    return {"name": data.name, "train": int(data.train_y.numel()), "test": int(data.test_y.numel()),
            "sha1": h.hexdigest()}


@contextmanager
def _run_lock(out: Path, info: Dist) -> Iterator[None]:
    """An exclusive lock on the run folder (rank 0, :func:`collegial.io.folder_lock`): a second
    run on the same ``out`` stops with one line naming the first one's pid."""
    if not info.is_main:
        yield
        return
    with folder_lock(out, "run"):
        yield


def _check_resumable(ckpt: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """A checkpoint continues only the same model, data, seed, numerics (amp, channels_last) and
    recipe (epochs may grow)."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} has checkpoint format {ckpt.get('format')!r}, not {CHECKPOINT_FORMAT}; "
                        "it cannot be resumed (use `overwrite=True`)")
    for key in ("model", "optimizer", "scheduler", "rng", "config"):
        if not isinstance(ckpt.get(key), dict):
            raise UserError(f"{path} lacks its {key} state; it cannot be resumed (use `overwrite=True`)")
    for key in ("epoch", "batch"):
        v = ckpt.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UserError(f"{path}: {key} must be a non-negative integer, got {v!r}; it cannot be resumed")
    old = ckpt.get("config", {})
    keys = ["family", "arch", "dataset", "seed", "model_kwargs", "amp", "channels_last"]
    keys += ["data"] if "data" in old else []  # checkpoints written before data fingerprints
    old = {"val_images": 0, **old}  # checkpoints written before validation splits held none out
    for key in [*keys, "val_images"]:
        if old.get(key) != config[key]:
            raise UserError(
                f"{path} was trained with {key}={old.get(key)!r}, not {config[key]!r}; "
                "use another `out` or `overwrite=True`"
            )
    old_recipe = dict(old.get("recipe", {}))
    new_recipe = dict(config["recipe"])
    old_recipe.pop("epochs", None)
    new_recipe.pop("epochs", None)
    for key, value in new_recipe.items():
        if old_recipe.get(key) != value:
            raise UserError(
                f"{path} was trained with {key}={old_recipe.get(key)!r}, not {value!r}; "
                "resume with the same recipe (only `epochs` may change)"
            )
    if ckpt.get("batch", 0) and old.get("world_size") != config["world_size"]:
        raise UserError(
            f"{path} was written mid-epoch by {old.get('world_size')} processes; "
            f"resume it with the same number, not {config['world_size']}"
        )


def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """The run files already in ``out``; :class:`UserError` if there are some and neither
    ``resume`` nor ``overwrite`` allows touching them."""
    if out.exists() and not out.is_dir():
        raise UserError(f"`out={out}` exists and is not a directory")
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if existing and not (resume or overwrite):
        raise UserError(
            f"{out} already holds a run ({', '.join(existing)}); pass `resume=True` to continue it "
            "or `overwrite=True` to start over"
        )
    last = out / "last.pt"
    if resume and not last.is_file() and (existing or last.is_symlink()):
        why = "is a dangling symlink" if last.is_symlink() else "is missing"
        held = ", ".join(existing) or "no other run files"
        raise UserError(
            f"`resume=True`: {last} {why} ({out} holds {held}); nothing was changed; "
            "pass `overwrite=True` to start over"
        )
    return existing


def _prepare_out(cfg: RunConfig, info: Dist) -> tuple[dict[str, Any] | None, list[str]]:
    """Refuse to clobber an existing run; return the checkpoint to resume from (or ``None``) and
    the previous run's files that starting over will delete -- later, once every setting has
    been validated (:func:`_start_out`)."""
    out = Path(cfg.out)
    existing = check_out_dir(out, resume=cfg.resume, overwrite=cfg.overwrite)
    ckpt = None
    if cfg.resume and (out / "last.pt").is_file():
        ckpt = load_checkpoint(out / "last.pt")
    return ckpt, (existing if ckpt is None else [])


def _start_out(out: Path, stale: list[str], info: Dist, files: dict[str, str]) -> None:
    """Delete ``stale`` (a previous run being started over) and write ``files`` (name -> text)."""
    barrier(info)  # every rank has looked before rank 0 changes anything
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for f in stale:
            if (out / f).is_dir() and not (out / f).is_symlink():
                shutil.rmtree(out / f)  # tensorboard/
            else:
                (out / f).unlink(missing_ok=True)
        for tmp in out.glob(TMP_GLOB):  # left by killed writes; we hold the folder's lock
            tmp.unlink(missing_ok=True)
        for name, text in files.items():
            write_text_atomic(out / name, text)
    barrier(info)


def _top_correct(
    logits: torch.Tensor, y: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and top-``k`` correct counts of ``logits`` ``(B, classes)`` for labels ``(B,)``."""
    hit = logits.topk(k, dim=1).indices == y[:, None]
    return hit[:, 0].sum(), hit.any(dim=1).sum()


@torch.no_grad()
def evaluate(
    net: nn.Module, loader: DeviceLoader, info: Dist, *, amp: bool = False, split: str = "test"
) -> dict[str, float]:
    """Loss and top-1 / top-5 error (%) over the whole (sharded) loader, summed over ranks, as
    ``{split}_loss``, ``{split}_top1_err``, ``{split}_top5_err``."""
    was_training = net.training
    net.eval()
    device = loader.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for x, y in loader:
        if x.shape[0] == 0:
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(x)
        logits = logits.float()
        top1, top5 = _top_correct(logits, y, min(5, logits.shape[1]))
        sums += torch.stack(
            [F.cross_entropy(logits, y, reduction="sum").double(), top1, top5, y.new_tensor(len(y))]
        ).to(sums.dtype)
    loss, top1, top5, n = all_reduce_sum(sums, info).tolist()
    net.train(was_training)
    return {
        f"{split}_loss": loss / n,
        f"{split}_top1_err": 100.0 * (1 - top1 / n),
        f"{split}_top5_err": 100.0 * (1 - top5 / n),
    }


# ---- the loop -------------------------------------------------------------------------------

#: The running sums of an epoch not started yet (a mid-epoch checkpoint stores its own).
_NO_PARTIAL = {"loss": 0.0, "correct": 0.0, "images": 0.0, "seconds": 0.0}


@dataclass
class _Run:
    """Everything one run's steps share: settings, model, optimizer, schedule, loaders, position.

    ``net`` trains (DDP and/or compiled), ``eval_net`` evaluates (``model``, maybe compiled);
    ``model`` is the bare module whose ``state_dict`` goes into checkpoints. ``start_epoch`` /
    ``start_batch`` / ``partial`` say where training (re)starts; ``history`` holds one record
    per finished epoch.
    """

    cfg: RunConfig
    recipe: Recipe
    info: Dist
    device: torch.device
    out: Path
    log: Callable[[str], None]
    stop: _StopOnSigterm
    model: nn.Module
    net: nn.Module
    eval_net: nn.Module
    opt: torch.optim.Optimizer
    sched: LRScheduler
    train_loader: DeviceLoader
    test_loader: DeviceLoader
    val_loader: DeviceLoader | None
    config: dict[str, Any]
    params: int
    sync_every: int
    start_epoch: int = 0
    start_batch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: dict[str, float] = field(default_factory=lambda: dict(_NO_PARTIAL))
    flops_img: int | None = None
    peak: float | None = None

    @property
    def steps(self) -> int:
        """Training steps per epoch."""
        return len(self.train_loader)


@dataclass(frozen=True)
class _Position:
    """Where a run (re)starts: the epoch, the batch in it, the history so far and the epoch's
    partial sums (:data:`_NO_PARTIAL` at an epoch boundary)."""

    epoch: int = 0
    batch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: dict[str, float] = field(default_factory=lambda: dict(_NO_PARTIAL))


@dataclass(frozen=True)
class _EpochSums:
    """One epoch's training: ``tot`` the sums over ranks (loss * n, correct, images, non-finite
    losses, stop vote) at its last host sync, its training seconds and its learning rate."""

    tot: list[float]
    seconds: float
    lr: float


def train(cfg: RunConfig, recipe: Recipe, data: ImageData) -> RunResult:
    """Train ``cfg.family`` ``cfg.arch`` on ``data`` with ``recipe``; see the module docstring.

    Writes ``cfg.out/{config.json, metrics.jsonl, last.pt, result.json}`` (rank 0). Raises
    :class:`UserError` for unusable settings and :class:`TrainingDiverged` on a non-finite loss.
    """
    info, device = setup(cfg.device)
    log: Callable[[str], None] = (
        (lambda s: print(s, flush=True)) if (cfg.verbose and info.is_main) else (lambda s: None)
    )
    _check_settings(cfg, data)
    held = hold_out(data, cfg.val_images)
    deterministic = cfg.deterministic if cfg.deterministic is not None else device.type == "cpu"
    out = Path(cfg.out)

    with _run_lock(out, info), _deterministic(deterministic, device), _StopOnSigterm().installed() as stop:
        ckpt, stale = _prepare_out(cfg, info)
        run = _build(cfg, recipe, data, held, ckpt, info, device, log, stop)
        # every setting has been validated: only now start over (delete the old run) or go on
        _start_out(out, stale, info, {
            "config.json": strict_json({**run.config, "provenance": provenance(cfg.seed)}, indent=2) + "\n",
            "metrics.jsonl": _metrics_text(run.history),
            "metrics.csv": _metrics_csv(run.history),
        })
        _announce(run, data)
        run.net.train()
        for epoch in range(run.start_epoch, recipe.epochs):
            sums = _train_epoch(run, epoch)
            if sums is None or _finish_epoch(run, epoch, sums):
                return _result(run, stop.signal)
        return _write_result(run)


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


def _build(
    cfg: RunConfig,
    recipe: Recipe,
    data: ImageData,
    held: HeldOut,
    ckpt: dict[str, Any] | None,
    info: Dist,
    device: torch.device,
    log: Callable[[str], None],
    stop: _StopOnSigterm,
) -> _Run:
    """Model, optimizer and schedule on ``device`` (seeded by ``cfg.seed``), restored from
    ``ckpt`` when resuming, wrapped for DDP / ``torch.compile``, and the data loaders;
    validates every setting (nothing on disk changes here)."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.family, arch=cfg.arch, dataset=cfg.dataset, **cfg.model_kwargs)
    params = sum(p.numel() for p in model.parameters())
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    opt = recipe.optimizer(model.parameters())
    sched = recipe.schedule(opt)
    config = _run_config_dict(cfg, recipe, info, params)
    config["data"] = data_fingerprint(data)
    out = Path(cfg.out)
    pos = _Position()
    if ckpt is not None:
        pos = _resume(ckpt, config, out / "last.pt", model, opt, sched)
        # epochs counted from 1, as every other message does ("stopped at epoch 1 step 217/468")
        where = (f"epoch {pos.epoch + 1} step {pos.batch}" if pos.batch else
                 f"the start of epoch {pos.epoch + 1}")
        log(f"resuming {out / 'last.pt'} at {where} ({pos.epoch} of {recipe.epochs} epochs done)")
    elif cfg.resume:
        log(f"--resume: {out} holds no run yet; starting it")

    net = wrap_ddp(model, info, device)
    eval_net: nn.Module = model
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]
        eval_net = torch.compile(model)  # type: ignore[assignment]
    train_loader, test_loader, val_loader = _loaders(cfg, recipe, data, held, info, device)
    return _Run(
        cfg=cfg, recipe=recipe, info=info, device=device, out=out, log=log, stop=stop,
        model=model, net=net, eval_net=eval_net, opt=opt, sched=sched,
        train_loader=train_loader, test_loader=test_loader, val_loader=val_loader, config=config,
        params=params,
        sync_every=cfg.sync_every or (1 if device.type == "cpu" else 50),
        start_epoch=pos.epoch, start_batch=pos.batch, history=pos.history, partial=pos.partial,
    )


def _resume(
    ckpt: dict[str, Any],
    config: dict[str, Any],
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: LRScheduler,
) -> _Position:
    """Check that checkpoint ``ckpt`` (read from ``path``) continues this run (``config``), load
    its model, optimizer, schedule and RNG states, and return where it stopped."""
    _check_resumable(ckpt, config, path)
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} does not fit this run ({first}); use `overwrite=True`") from None
    return _Position(
        epoch=int(ckpt["epoch"]),
        batch=int(ckpt.get("batch", 0)),
        history=list(ckpt.get("history", [])),
        partial=dict(ckpt.get("partial", _NO_PARTIAL)),
    )


def _loaders(
    cfg: RunConfig, recipe: Recipe, data: ImageData, held: HeldOut, info: Dist, device: torch.device
) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader | None]:
    """The training loader over ``held.train_x`` (global batch, augmentation and shuffling of
    ``recipe``), the test loader and the validation loader (``None`` without held-out images;
    both ``cfg.eval_batch_size`` per process), all on ``device`` and sharded over ranks. The
    normalization is that of all of ``data``'s training images, held out or not."""
    mean, std = normalization_stats(data, recipe.normalization)
    loader_kw = dict(
        mean=mean,
        std=std,
        device=device,
        generator_seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        channels_last=cfg.channels_last,
    )
    train_loader = DeviceLoader(
        held.train_x,
        held.train_y,
        global_batch_size=recipe.batch_size,
        train=True,
        crop_padding=recipe.crop_padding,
        flip=recipe.flip,
        **loader_kw,  # type: ignore[arg-type]
    )
    test_loader = DeviceLoader(
        data.test_x,
        data.test_y,
        batch_size=cfg.eval_batch_size,
        train=False,
        **loader_kw,  # type: ignore[arg-type]
    )
    val_loader = None
    if held.num_val:
        val_loader = DeviceLoader(
            held.val_x,
            held.val_y,
            batch_size=cfg.eval_batch_size,
            train=False,
            **loader_kw,  # type: ignore[arg-type]
        )
    return train_loader, test_loader, val_loader


def _announce(run: _Run, data: ImageData) -> None:
    """Set up the throughput accounting (MFU when the device's peak is known) and log the run's
    one-line summary (and a note when bf16 autocast runs on a CPU without native bf16)."""
    cfg, recipe, info, device = run.cfg, run.recipe, run.info, run.device
    try:
        run.flops_img = train_flops_per_image(
            cfg.family, cfg.arch, cfg.dataset, **cfg.model_kwargs
        )
    except Exception:  # noqa: BLE001 - FLOPs are informative only; a model may not trace
        run.flops_img = None
    run.peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops else peak_flops(device, cfg.amp)
    flops_img = run.flops_img
    run.log(
        f"{cfg.family} {cfg.arch} on {data.name}: {format_params(run.params)} params"
        + (f", {format_flops(flops_img / 3)}/image fwd" if flops_img else "")
        + f"; {recipe.epochs} epochs x {run.steps} steps of {recipe.batch_size}"
        + (f" ({info.world_size} processes)" if info.enabled else "")
        + (f"; {cfg.val_images} training images held out for validation" if cfg.val_images else "")
        + f"; {device}"
        + (" bf16" if cfg.amp else "")
        + (" channels_last" if cfg.channels_last else "")
        + (" compile" if cfg.compile else "")
    )
    if cfg.amp and device.type == "cpu" and not _cpu_has_bf16():
        run.log(
            "note: this CPU has no native bf16 (AVX512-BF16 / AMX): bf16 autocast runs much "
            "slower than fp32 here (see bench/RESULTS.md); consider dropping --amp"
        )


def _train_epoch(run: _Run, epoch: int) -> _EpochSums | None:
    """Train (0-based) ``epoch`` from ``run.start_batch`` on; ``None`` when SIGTERM / SIGINT
    stopped it mid-epoch (after a checkpoint of that exact position).

    Every ``run.sync_every`` steps (and at the end) one host sync sums the counts over ranks,
    checks the loss (:class:`TrainingDiverged`), moves the progress bar and polls the stop flag
    -- the same decision on every rank.
    """
    run.train_loader.set_epoch(epoch, start_batch=run.start_batch)
    lr = run.opt.param_groups[0]["lr"]
    acc = _epoch_sums(run)
    # `tot`: the sums over ranks at the last host sync (+ the SIGTERM vote).
    tot = all_reduce_sum(torch.cat([acc, acc.new_zeros(1)]), run.info).tolist()
    seconds = run.partial["seconds"]
    bar = _progress_bar(run, epoch)
    t0 = time.perf_counter()
    t_sync = t0
    for step, (x, y) in enumerate(run.train_loader, start=run.start_batch):
        _train_step(run, x, y, acc)
        done = step + 1
        if done % run.sync_every and done != run.steps:
            continue
        prev_images = tot[2]
        tot = all_reduce_sum(
            torch.cat([acc, acc.new_tensor([float(run.stop.requested)])]), run.info
        ).tolist()
        now = time.perf_counter()
        if tot[3] > 0:
            bar.close()
            raise _diverged(run, epoch, done)
        bar.update(done - bar.n)
        bar.set_postfix(
            loss=f"{tot[0] / max(tot[2], 1):.4f}",
            img_s=f"{(tot[2] - prev_images) / max(now - t_sync, 1e-9):.1f}",
            refresh=False,
        )
        t_sync = now
        if tot[4] > 0:  # SIGTERM: checkpoint this exact position and stop
            bar.close()
            _stop_mid_epoch(run, epoch, done, tot, seconds + (now - t0))
            return None
    bar.close()
    return _EpochSums(tot=tot, seconds=seconds + (time.perf_counter() - t0), lr=lr)


def _epoch_sums(run: _Run) -> torch.Tensor:
    """This rank's running sums on the device: loss * n, correct, images, non-finite losses. The
    epoch's partial sums (from a mid-epoch checkpoint) count on rank 0."""
    acc = torch.zeros(4, dtype=torch.float64, device=run.device)
    if run.info.is_main:
        # float64: a float32 tensor here rounded the partial loss sum (resume not bit-exact)
        p = run.partial
        acc[:3] = torch.tensor([p["loss"], p["correct"], p["images"]], dtype=torch.float64)
    return acc


def _progress_bar(run: _Run, epoch: int) -> tqdm:
    """The epoch's progress bar on stderr: only with ``cfg.progress``, on rank 0, and when
    stderr is a terminal (never into a log file)."""
    return tqdm(
        total=run.steps,
        initial=run.start_batch,
        desc=f"epoch {epoch + 1}/{run.recipe.epochs}",
        unit="step",
        leave=False,
        dynamic_ncols=True,
        disable=not (run.cfg.progress and run.info.is_main and _stderr_is_terminal()),
    )


def _stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` (where tqdm writes) is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor, acc: torch.Tensor) -> None:
    """One optimizer step on the batch ``(x, y)``; adds its loss * n, correct predictions,
    images and non-finite loss (0 or 1) to ``acc`` (on the device, no host sync)."""
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.cfg.amp):
        logits = run.net(x)
        loss = F.cross_entropy(logits, y)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
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


def _diverged(run: _Run, epoch: int, done: int) -> TrainingDiverged:
    """The error for a non-finite loss at (0-based) ``epoch`` after ``done`` steps."""
    last = run.out / "last.pt"
    kept = f"{last} (epoch {len(run.history)})" if last.exists() else "none written yet"
    return TrainingDiverged(
        f"loss is not finite at epoch {epoch + 1} step {done}; stopped "
        f"(last good checkpoint: {kept}); try a lower `lr`"
    )


def _stop_mid_epoch(run: _Run, epoch: int, done: int, tot: list[float], seconds: float) -> None:
    """SIGTERM / SIGINT after ``done`` steps of ``epoch``: checkpoint that exact position (with
    the epoch's sums ``tot`` and ``seconds`` so far) and say how to continue."""
    part = {"loss": tot[0], "correct": tot[1], "images": tot[2], "seconds": seconds}
    _checkpoint(run, epoch, done, part)
    run.log(
        f"{run.stop.signal}: stopped at epoch {epoch + 1} step {done}/{run.steps}; "
        f"checkpoint {run.out / 'last.pt'}; continue with --resume"
    )


def _finish_epoch(run: _Run, epoch: int, sums: _EpochSums) -> bool:
    """Step the schedule, evaluate, append the epoch's record to the history and
    ``metrics.jsonl``, checkpoint and log it; ``True`` when a stop was requested on any rank
    and epochs remain (the run stops here, at an epoch boundary)."""
    run.sched.step()
    record = _epoch_record(run, epoch, sums)
    run.history.append(record)
    run.start_batch = 0
    run.partial = dict(_NO_PARTIAL)
    _checkpoint(run, epoch + 1, 0, run.partial)
    if run.info.is_main:  # rewritten whole (atomically): a full disk cannot leave half a line
        write_text_atomic(run.out / "metrics.jsonl", _metrics_text(run.history))
        write_text_atomic(run.out / "metrics.csv", _metrics_csv(run.history))
        if run.cfg.tensorboard:
            _tensorboard_epoch(run.out / "tensorboard", record)
    _log_epoch(run, record)
    if epoch + 1 < run.recipe.epochs and _any_rank(run.stop.requested, run.info, run.device):
        run.log(
            f"{run.stop.signal}: stopped after epoch {epoch + 1}; checkpoint {run.out / 'last.pt'}; "
            "continue with --resume"
        )
        return True
    return False


def _epoch_record(run: _Run, epoch: int, sums: _EpochSums) -> dict[str, Any]:
    """Evaluate and return the epoch's line of ``metrics.jsonl``: learning rate, training loss
    and error, test metrics, throughput (and TFLOP/s, MFU when known)."""
    t_eval = time.perf_counter()
    test = evaluate(run.eval_net, run.test_loader, run.info, amp=run.cfg.amp)
    if run.val_loader is not None:
        test.update(evaluate(run.eval_net, run.val_loader, run.info, amp=run.cfg.amp, split="val"))
    tot, flops_img, peak = sums.tot, run.flops_img, run.peak
    n_img = max(tot[2], 1.0)
    ips = tot[2] / max(sums.seconds, 1e-9)
    return {
        "epoch": epoch + 1,
        "lr": sums.lr,
        "train_loss": tot[0] / n_img,
        "train_top1_err": 100.0 * (1 - tot[1] / n_img),
        **test,
        "images_per_s": ips,
        "train_seconds": sums.seconds,
        "eval_seconds": time.perf_counter() - t_eval,
        "tflops_per_s": ips * flops_img / 1e12 if flops_img else None,
        "mfu": ips * flops_img / peak if (flops_img and peak) else None,
    }


def _log_epoch(run: _Run, record: dict[str, Any]) -> None:
    """The epoch's one log line."""
    run.log(
        f"epoch {record['epoch']:>3}/{run.recipe.epochs} | lr {record['lr']:.4g} | "
        f"train loss {record['train_loss']:.4f} err {record['train_top1_err']:.2f}% | "
        f"test loss {record['test_loss']:.4f} top-1 {record['test_top1_err']:.2f}% "
        f"top-5 {record['test_top5_err']:.2f}%"
        + (f" | val loss {record['val_loss']:.4f} top-1 {record['val_top1_err']:.2f}%"
           if "val_loss" in record else "")
        + f" | {record['images_per_s']:.1f} img/s"
        + (f" | {record['tflops_per_s']:.3g} TFLOP/s" if run.flops_img else "")
        + (f" | MFU {100 * record['mfu']:.1f}%" if record["mfu"] is not None else "")
    )


def _metrics_text(history: list[dict[str, Any]]) -> str:
    """``metrics.jsonl``: one strict JSON line per finished epoch."""
    return "".join(strict_json(r) + "\n" for r in history)


def _tensorboard_epoch(folder: Path, record: dict[str, Any]) -> None:
    """One finished epoch's numbers as TensorBoard scalars (step = epoch), in ``folder``."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(folder)) as w:
        for k, v in record.items():
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                w.add_scalar(k, v, record["epoch"])


def _metrics_csv(history: list[dict[str, Any]]) -> str:
    """``metrics.csv``: the same epochs as ``metrics.jsonl``, one row each (for spreadsheets and
    pandas), columns in the order the records first name them; empty cells for missing values."""
    import csv
    import io

    cols = list(dict.fromkeys(k for r in history for k in r)) or ["epoch"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if r.get(k) is None else r[k]) for k in cols} for r in history)
    return buf.getvalue()


def _checkpoint(run: _Run, epoch: int, batch: int, part: dict[str, float]) -> None:
    """Write ``out/last.pt`` atomically (rank 0): model, optimizer, schedule and RNG states,
    the position ``(epoch, batch)``, the epoch's partial sums, the history and the config."""
    if run.info.is_main:
        save_atomic(
            {
                "format": CHECKPOINT_FORMAT,
                "model": run.model.state_dict(),
                "epoch": epoch,
                "batch": batch,
                "optimizer": run.opt.state_dict(),
                "scheduler": run.sched.state_dict(),
                "rng": rng_state(),
                "partial": part,
                "history": run.history,
                "config": run.config,
            },
            run.out / "last.pt",
        )
    barrier(run.info)


def _result(run: _Run, stopped: str | None = None) -> RunResult:
    """The run's :class:`RunResult` from its history (NaN metrics before the first epoch)."""
    last = run.history[-1] if run.history else {}
    return RunResult(
        out=run.out,
        epochs=len(run.history),
        test_top1_err=last.get("test_top1_err", math.nan),
        test_top5_err=last.get("test_top5_err", math.nan),
        test_loss=last.get("test_loss", math.nan),
        params=run.params,
        history=run.history,
        stopped=stopped,
        val_top1_err=last.get("val_top1_err"),
        val_top5_err=last.get("val_top5_err"),
        val_loss=last.get("val_loss"),
    )


def _write_result(run: _Run) -> RunResult:
    """The finished run's result; rank 0 writes it to ``out/result.json``."""
    cfg, res = run.cfg, _result(run)
    if run.info.is_main:
        write_json_atomic(run.out / "result.json", {
            "family": cfg.family,
            "arch": cfg.arch,
            "dataset": cfg.dataset,
            "seed": cfg.seed,
            "params": run.params,
            "epochs": res.epochs,
            "test_top1_err": res.test_top1_err,
            "test_top5_err": res.test_top5_err,
            "test_loss": res.test_loss,
            "val_images": cfg.val_images,
            "val_top1_err": res.val_top1_err,
            "val_top5_err": res.val_top5_err,
            "val_loss": res.val_loss,
            # what produced it, so that a reader (figure1) can check a reused result is its own
            "recipe": run.config.get("recipe"),
            "data": run.config.get("data"),
            "model_kwargs": run.config.get("model_kwargs"),
            "provenance": provenance(cfg.seed),
        }, indent=2)
    barrier(run.info)
    return res


def _any_rank(flag: bool, info: Dist, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (a collective: every rank must call it)."""
    if not info.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    return bool(all_reduce_sum(t, info).item() > 0)


def _cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); ``True`` when unknown."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if not any(found):
        return True
    return any(f() for f in found if f is not None)
