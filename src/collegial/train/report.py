"""What a run reports: the test (and validation) loss and errors (:func:`evaluate`), each
epoch's record (a line of ``metrics.jsonl``) and log line, its throughput (:class:`Meter`), and
the :class:`RunResult` the training loop returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from collegial.train.checkpoint import EpochSums, Position
from collegial.train.distributed import Dist, all_reduce_sum
from collegial.train.loader import DeviceLoader

__all__ = ["Meter", "RunResult", "TrainedEpoch", "epoch_line", "epoch_record", "evaluate", "run_result"]


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
    stopped: str | None = None  # "SIGTERM", "SIGINT" or the launcher's warning "SIGUSR2" when stopped early (after a checkpoint)
    val_top1_err: float | None = None
    val_top5_err: float | None = None
    val_loss: float | None = None


@dataclass(frozen=True)
class Meter:
    """Throughput accounting: training FLOPs per image (None when the model does not trace) and
    the device's peak FLOP/s (None when unknown: no MFU)."""

    flops_per_image: int | None
    peak: float | None


@dataclass(frozen=True)
class TrainedEpoch:
    """One epoch's training: its learning rate and sums, after ``steps`` steps; ``stopped`` when
    SIGTERM / SIGINT ended it there."""

    epoch: int
    lr: float
    sums: EpochSums
    steps: int
    stopped: bool = False

    @property
    def stopped_at(self) -> Position:
        """Where a stopped epoch continues: its next batch, with its sums so far."""
        return Position(self.epoch, self.steps, self.sums)


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


def _top_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and top-``k`` correct counts of ``logits`` ``(B, classes)`` for labels ``(B,)``."""
    hit = logits.topk(k, dim=1).indices == y[:, None]
    return hit[:, 0].sum(), hit.any(dim=1).sum()


def epoch_record(trained: TrainedEpoch, evaluation: tuple[dict[str, float], float], meter: Meter) -> dict[str, Any]:
    """The epoch's line of ``metrics.jsonl``: learning rate, training loss and error, test (and
    validation) metrics, throughput (and TFLOP/s, MFU when known)."""
    metrics, eval_seconds = evaluation
    sums, flops, peak = trained.sums, meter.flops_per_image, meter.peak
    ips = sums.images / max(sums.seconds, 1e-9)
    return {
        "epoch": trained.epoch + 1,
        "lr": trained.lr,
        "train_loss": sums.mean_loss,
        "train_top1_err": sums.error,
        **metrics,
        "images_per_s": ips,
        "train_seconds": sums.seconds,
        "eval_seconds": eval_seconds,
        "tflops_per_s": ips * flops / 1e12 if flops else None,
        "mfu": ips * flops / peak if (flops and peak) else None,
    }


def epoch_line(record: dict[str, Any], epochs: int, meter: Meter) -> str:
    """The epoch's one log line."""
    return (
        f"epoch {record['epoch']:>3}/{epochs} | lr {record['lr']:.4g} | "
        f"train loss {record['train_loss']:.4f} err {record['train_top1_err']:.2f}% | "
        f"test loss {record['test_loss']:.4f} top-1 {record['test_top1_err']:.2f}% "
        f"top-5 {record['test_top5_err']:.2f}%"
        + (f" | val loss {record['val_loss']:.4f} top-1 {record['val_top1_err']:.2f}%"
           if "val_loss" in record else "")
        + f" | {record['images_per_s']:.1f} img/s"
        + (f" | {record['tflops_per_s']:.3g} TFLOP/s" if meter.flops_per_image else "")
        + (f" | MFU {100 * record['mfu']:.1f}%" if record["mfu"] is not None else "")
    )


def run_result(out: Path, params: int, history: list[dict[str, Any]], stopped: str | None = None) -> RunResult:
    """The run's :class:`RunResult` from its history (NaN metrics before the first epoch)."""
    last = history[-1] if history else {}
    return RunResult(
        out=out,
        epochs=len(history),
        test_top1_err=last.get("test_top1_err", math.nan),
        test_top5_err=last.get("test_top5_err", math.nan),
        test_loss=last.get("test_loss", math.nan),
        params=params,
        history=history,
        stopped=stopped,
        val_top1_err=last.get("val_top1_err"),
        val_top5_err=last.get("val_top5_err"),
        val_loss=last.get("val_loss"),
    )
