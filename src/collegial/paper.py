"""The paper's facts, written once: the models it names with the figures it prints, its search
settings and optima (SPEC section 6), its training recipes and their sources (SPEC section 7),
and its training tables (appendix Tables 1-3).

Everything that compares with the paper reads them from here: the presets
(:data:`collegial.models.PRESETS`, one per :data:`MODELS` entry), ``collegial reproduce search``
and ``reproduce costs`` (:mod:`collegial.experiments.search_repro`), ``reproduce table1..3``
(:mod:`collegial.experiments.paper_tables`), the training recipes
(:data:`collegial.train.recipes.RECIPES`), the demo and the cost tests. Plain data; this module
imports nothing of collegial, so every layer (models included) may read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperModel:
    """One model the paper names, with the figures it prints (None where it prints none).

    ``params_m``: parameters in millions (to 0.1M); ``gflops``: GFLOPs (rounded up to 0.01);
    ``rho``: the compression ``params(rho_baseline) / params`` as printed."""

    dataset: str
    family: str
    arch: str
    params_m: float | None = None
    gflops: float | None = None
    rho: float | None = None
    rho_baseline: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.dataset, self.family, self.arch

    @property
    def preset(self) -> str:
        """Its preset's name, ``DATASET-FAMILY-ARCH``."""
        return f"{self.dataset}-{self.family}-{self.arch}"


_M = PaperModel
#: Every model the paper names (each is a preset), grouped by dataset and family.
MODELS: tuple[PaperModel, ...] = (
    _M("cifar10", "resnext29", "1x128d", 13.8, 4.19),
    _M("cifar10", "resnext29", "3x64d", 13.3, 4.15),
    _M("cifar10", "resnext29", "37x10d"),
    _M("cifar10", "resnext29", "10x10d", rho=3.3, rho_baseline="1x128d"),
    _M("cifar10", "resnext29", "44x8d", 12.7, 4.20),
    _M("cifar10", "resnext29", "60x6d", 12.6, 4.17),
    _M("cifar100", "resnext29", "1x128d"),
    _M("cifar100", "resnext29", "3x64d"),
    _M("cifar100", "resnext29", "44x8d"),
    _M("cifar100", "resnext29", "60x6d"),
    _M("imagenet32", "resnext29", "1x128d", 14.8),
    _M("imagenet32", "resnext29", "3x64d", 14.4),
    _M("imagenet32", "resnext29", "37x10d", 14.8),
    _M("imagenet32", "resnext29", "10x10d", 5.2, rho=2.8, rho_baseline="1x128d"),
    _M("imagenet32", "resnext29", "3x40d", 8.0, rho=1.8, rho_baseline="1x128d"),
    _M("imagenet32", "wrn", "28-10", 37.1),
    _M("imagenet32", "wrn", "28-5", 9.5),
    _M("imagenet64", "resnext38", "1x96d", 37.5),
    _M("imagenet64", "resnext38", "2x64d", 39.0),
    _M("imagenet64", "resnext38", "22x10d", 36.3),
    _M("imagenet64", "resnext38", "8x10d", 16.3, rho=2.3, rho_baseline="1x96d"),
    _M("imagenet64", "resnext38", "1x128d", 57.8),
    _M("imagenet64", "resnext38", "3x64d", 56.1),
    _M("imagenet64", "resnext38", "37x10d", 57.7),
    _M("imagenet64", "resnext38", "10x10d", 19.1, rho=3.0, rho_baseline="1x128d"),
    _M("imagenet64", "wrn", "36-5", 37.6),
)
_BY_KEY = {m.key: m for m in MODELS}


def paper_model(dataset: str, family: str, arch: str) -> PaperModel:
    """The model the paper names; KeyError for one it does not."""
    return _BY_KEY[(dataset, family, arch)]


def printed_models() -> tuple[PaperModel, ...]:
    """The models with at least one printed figure (parameters, GFLOPs or rho)."""
    return tuple(m for m in MODELS if (m.params_m, m.gflops, m.rho) != (None, None, None))


# ------------------------------------------------------------------------------- search settings


@dataclass(frozen=True)
class Setting:
    """One search setting of the paper (SPEC section 6) and its reported optima."""

    name: str
    dataset: str
    family: str
    baseline: str
    budget: str
    rounding: str
    primal: str
    dual: str | None
    vicinity: tuple[str, ...] = ()  # models the paper reports "in the close vicinity"
    why_rounding: str = ""

    @property
    def dual_rho(self) -> float | None:
        """The dual's compression as the paper prints it (None without a dual)."""
        return None if self.dual is None else paper_model(self.dataset, self.family, self.dual).rho


SETTINGS: tuple[Setting, ...] = (
    Setting("CIFAR-10, params", "cifar10", "resnext29", "1x128d", "params", "floor", "37x10d", "10x10d"),
    Setting("CIFAR-10, FLOPs", "cifar10", "resnext29", "1x128d", "flops", "nearest", "44x8d", None, ("60x6d",),
            "44x8d has 4.191 GFLOPs > 4.181 for 1x128d: only nearest rounding reaches it"),
    Setting("ImageNet32, params", "imagenet32", "resnext29", "1x128d", "params", "floor", "37x10d", "10x10d"),
    Setting("ImageNet64 (1x96d), params", "imagenet64", "resnext38", "1x96d", "params", "floor", "22x10d", "8x10d",
            why_rounding="22x10d (36.3M) is floor; nearest would give 23x10d (37.7M)"),
    Setting("ImageNet64 (1x128d), params", "imagenet64", "resnext38", "1x128d", "params", "floor", "37x10d", "10x10d"),
)


def paper_optima(dataset: str, family: str, baseline: str, budget: str) -> dict[str, str]:
    """The paper's optima of one setting, ``{"primal": arch, "dual": arch}`` (no dual where it
    reports none); empty for a setting the paper does not search."""
    for s in SETTINGS:
        if (s.dataset, s.family, s.baseline, s.budget) == (dataset, family, baseline, budget):
            return {"primal": s.primal} | ({"dual": s.dual} if s.dual is not None else {})
    return {}


# ------------------------------------------------------------------------------ training recipes


@dataclass(frozen=True)
class PaperRecipe:
    """One training recipe of SPEC section 7, as plain values (the training layer builds its
    :class:`collegial.train.recipes.Recipe` from it). Every recipe is SGD with momentum 0.9, no
    Nesterov, weight decay on all parameters and the dataset's own normalization; the learning
    rate is multiplied by ``gamma`` at each epoch in ``milestones``; ``batch_size`` and ``lr`` are
    global (the ImageNet32 batch of 1024 was 8 GPUs x 128).

    ``crop_padding``: zero padding of the random crop (0 = no crop); ``flip``: random horizontal
    flip; ``source``: where the numbers come from, "paper" or "official code"."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    milestones: tuple[int, ...]
    gamma: float
    crop_padding: int
    flip: bool
    source: str


_CIFAR_RECIPE = PaperRecipe(300, 128, 0.1, 5e-4, (150, 225), 0.1, 4, True, "paper")
#: The paper's recipe of each dataset it trains on. ImageNet 224: epochs, batch, lr and schedule
#: as SPEC section 7 gives them, from the official code; its weight decay (1e-4, the usual ResNeXt
#: value) is the project's choice, and its random-resized-crop augmentation has no field here.
PAPER_RECIPES: dict[str, PaperRecipe] = {
    "cifar10": _CIFAR_RECIPE,
    "cifar100": _CIFAR_RECIPE,
    "imagenet32": PaperRecipe(80, 1024, 0.08, 5e-4, (20, 40, 60), 0.2, 4, True, "paper"),
    "imagenet64": PaperRecipe(60, 512, 0.04, 5e-4, (20, 30, 40), 0.2, 4, True, "paper"),
    "imagenet": PaperRecipe(100, 256, 0.1, 1e-4, (30, 60, 90), 0.1, 0, True, "official code"),
}


# ------------------------------------------------------------------------------- training tables


@dataclass(frozen=True)
class Row:
    """One row of a training table: the model, its label and figures as printed, and the
    paper's errors in %, in the order of :attr:`Table.metrics`."""

    family: str
    arch: str
    dataset: str
    label: str
    rho: str
    params: str
    paper: tuple[float, ...]


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    metrics: tuple[str, ...]
    seeds: int
    rows: tuple[Row, ...]


def _row(dataset: str, family: str, arch: str, label: str, errors: tuple[float, ...], rho: str = "1",
         params_of: str | None = None) -> Row:
    """A table row of :data:`MODELS`' model; its rho and params as the model prints them (``rho``:
    the text where the model has no printed rho; ``params_of``: the dataset whose count it prints)."""
    m = paper_model(dataset, family, arch)
    shown = paper_model(params_of, family, arch) if params_of else m
    return Row(family, arch, dataset, label, f"{m.rho:.1f}" if m.rho is not None else rho,
               f"{shown.params_m:.1f}M", errors)


TABLE1 = Table(
    "table1",
    "ImageNet 32x32, ResNeXt-29 (appendix Table 1)",
    ("top-1", "top-5"),
    5,
    (
        _row("imagenet32", "wrn", "28-10", "Wide ResNet 28-10", (40.96, 18.87), "-"),
        _row("imagenet32", "resnext29", "1x128d", "ResNet-29 1x128d", (40.61, 17.82)),
        _row("imagenet32", "resnext29", "3x64d", "ResNeXt-29 3x64d", (39.58, 17.09)),
        _row("imagenet32", "resnext29", "37x10d", "ResNeXt-29 37x10d (primal)", (38.41, 16.13)),
        _row("imagenet32", "wrn", "28-5", "Wide ResNet 28-5", (45.36, 21.36), "1.6"),
        _row("imagenet32", "resnext29", "10x10d", "ResNeXt-29 10x10d (dual)", (43.36, 19.65)),
        _row("imagenet32", "resnext29", "3x40d", "ResNeXt-29 3x40d (dual curve)", (41.54, 18.58)),
    ),
)

TABLE2 = Table(
    "table2",
    "ImageNet 64x64, ResNeXt-38 (appendix Table 2)",
    ("top-1", "top-5"),
    5,
    (
        _row("imagenet64", "wrn", "36-5", "Wide ResNet 36-5", (32.34, 12.64), "-"),
        _row("imagenet64", "resnext38", "1x96d", "ResNet-38 1x96d", (29.36, 10.10)),
        _row("imagenet64", "resnext38", "2x64d", "ResNeXt-38 2x64d", (28.86, 9.72)),
        _row("imagenet64", "resnext38", "22x10d", "ResNeXt-38 22x10d (primal)", (28.34, 9.38)),
        _row("imagenet64", "resnext38", "8x10d", "ResNeXt-38 8x10d (dual)", (30.93, 11.02)),
        _row("imagenet64", "resnext38", "1x128d", "ResNet-38 1x128d", (28.56, 9.67)),
        _row("imagenet64", "resnext38", "3x64d", "ResNeXt-38 3x64d", (28.01, 9.28)),
        _row("imagenet64", "resnext38", "37x10d", "ResNeXt-38 37x10d (primal)", (27.24, 8.74)),
        _row("imagenet64", "resnext38", "10x10d", "ResNeXt-38 10x10d (dual)", (30.22, 10.60)),
    ),
)

# Table 3: one row per (model, dataset); the paper reports C10 and C100 top-1 error and prints
# each model's CIFAR-10 parameter count.
TABLE3 = Table(
    "table3",
    "CIFAR-10/100 at a FLOPs budget, ResNeXt-29 (appendix Table 3)",
    ("top-1",),
    10,
    tuple(
        _row(ds, "resnext29", arch, f"ResNeXt-29 {arch} ({ds})", (err,), "-", params_of="cifar10")
        for arch, c10, c100 in (("1x128d", 4.08, 19.39), ("3x64d", 3.96, 18.57), ("44x8d", 3.66, 17.86),
                                ("60x6d", 3.73, 18.04))
        for ds, err in (("cifar10", c10), ("cifar100", c100))
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (TABLE1, TABLE2, TABLE3)}
