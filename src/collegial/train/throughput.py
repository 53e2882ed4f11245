"""Training throughput of a model as built: images per second of real training steps.

Parameters and FLOPs do not say what a collegial ensemble costs to train: grouped convolutions
with many narrow groups run far below the hardware's rate (the demo measured the recommended
resnext11 174x3d 11.5x slower than the 1x64d baseline at equal parameters). This module times
what a user pays: ``steps`` real SGD steps (forward, cross-entropy, backward, momentum update)
of ``create_model(family, arch=..., dataset=...)`` at a batch of the dataset's shape, after
``warmup`` untimed steps, in both memory layouts on image models (channels-last often helps
grouped convolutions: the faster one is reported with its layout). The inputs are random:
speed does not depend on the pixel values. What is selected (candidates, layouts, step counts)
is deterministic; the timings are not, so each result carries the spread of its steps.

Results are cached per device, torch version, thread count, model and batch size in the folder
the caller passes (``$COLLEGIAL_CACHE/throughput`` from the commands).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from collegial.io import write_json_atomic
from collegial.models import create_model, get_dataset_spec

#: Timed and untimed steps per layout (the defaults of :func:`measure_throughput`); fast
#: models take more timed steps, until they add up to :data:`MIN_SECONDS` (at most :data:`MAX_STEPS`).
STEPS, WARMUP = 3, 1
MIN_SECONDS, MAX_STEPS = 0.5, 50


@dataclass(frozen=True)
class Throughput:
    """``images_per_s``: the median step's rate in the faster layout; ``low``/``high``: the
    slowest and fastest step's rates in that layout; ``channels_last``: that layout."""

    family: str
    arch: str
    dataset: str
    batch_size: int
    device: str
    images_per_s: float
    low: float
    high: float
    steps: int  # timed steps in that layout
    channels_last: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def device_name(device: torch.device) -> str:
    """What the timings depend on: the device's name, torch version and CPU thread count."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return f"{device.type}:{name}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _step_rates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int) -> list[float]:
    """Images per second of each timed SGD step, after ``warmup`` untimed ones: ``steps`` of
    them, more until they add up to :data:`MIN_SECONDS` (at most :data:`MAX_STEPS`)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rates: list[float] = []
    i, spent = 0, 0.0
    while i < warmup + steps or (spent < MIN_SECONDS and len(rates) < MAX_STEPS):
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        if i >= warmup:
            dt = time.perf_counter() - t0
            spent += dt
            rates.append(x.shape[0] / dt)
        i += 1
    return rates


def measure_throughput(family: str, arch: str, dataset: str, *, batch_size: int, device: str | torch.device = "cpu",
                       steps: int = STEPS, warmup: int = WARMUP, cache: Path | None = None,
                       seed: int = 0) -> Throughput:
    """Training images per second of ``arch`` (see the module docstring); from ``cache`` when
    measured before on this device with these settings."""
    dev = torch.device(device)
    key = {"family": family, "arch": arch, "dataset": dataset, "batch_size": batch_size, "steps": steps,
           "warmup": warmup, "min_seconds": MIN_SECONDS, "device": device_name(dev)}
    path = None
    if cache is not None:
        path = cache / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20] + ".json")
        if path.is_file():
            return Throughput(**json.loads(path.read_text())["result"])
    spec = get_dataset_spec(dataset)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, spec.in_channels, spec.resolution, spec.resolution, generator=g)
    y = torch.randint(0, spec.num_classes, (batch_size,), generator=g)
    best: tuple[float, list[float], bool] | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(family, arch=arch, dataset=dataset).to(dev).train()
    image_model = any(isinstance(m, nn.Conv2d) for m in model.modules())
    for cl in (False, True) if image_model else (False,):
        fmt = torch.channels_last if cl else torch.contiguous_format
        rates = sorted(_step_rates(model.to(memory_format=fmt), x.to(dev, memory_format=fmt), y.to(dev), steps, warmup))
        median = rates[len(rates) // 2]
        if best is None or median > best[0]:
            best = (median, rates, cl)
    assert best is not None
    out = Throughput(family, arch, dataset, batch_size, key["device"], best[0], best[1][0], best[1][-1],
                     len(best[1]), best[2])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"key": key, "result": out.to_dict()})
    return out
