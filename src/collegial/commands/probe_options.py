"""The probe-input options shared by ``fit-alpha``, ``search`` and ``reproduce search``:
``--inputs``, ``--correlation``, ``--pairs``, ``--input-data`` -> a
:class:`~collegial.ntk.inputs.ProbeInputs` (for ``--inputs data`` the images are loaded here:
``collegial.ntk`` never loads data)."""

from __future__ import annotations

import argparse

from torch import Tensor

from collegial.errors import UserError
from collegial.ntk.inputs import (
    DATA_DATASETS,
    DEFAULT_CORRELATION,
    DEFAULT_INPUT_DATA,
    DEFAULT_INPUTS,
    DEFAULT_PAIRS,
    INPUT_KINDS,
    ProbeInputs,
)

#: The probe options' defaults (argparse dest -> value).
PROBE_DEFAULTS: dict[str, object] = {"inputs": DEFAULT_INPUTS, "correlation": DEFAULT_CORRELATION,
                                     "pairs": DEFAULT_PAIRS, "input_data": DEFAULT_INPUT_DATA}

#: Images drawn from for ``--inputs data`` (the first this many training images).
DATA_IMAGES = 10_000


def add_probe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", default=DEFAULT_INPUTS, metavar="|".join(INPUT_KINDS),
                   help="probe inputs: relu (default; post-ReLU correlated Gaussian pairs), gaussian "
                   "(independent N(0,1) entries) or data (real images through a random ReLU stem)")
    p.add_argument("--correlation", type=float, default=DEFAULT_CORRELATION,
                   help=f"correlation rho of the relu pairs' Gaussians (default {DEFAULT_CORRELATION})")
    p.add_argument("--pairs", type=int, default=DEFAULT_PAIRS,
                   help=f"independent input pairs and readouts; T is split between them (default {DEFAULT_PAIRS})")
    p.add_argument("--input-data", default=DEFAULT_INPUT_DATA, metavar="|".join(DATA_DATASETS),
                   help=f"images for --inputs data (default {DEFAULT_INPUT_DATA}; shipped, never downloaded)")


def probe_inputs(args: argparse.Namespace) -> ProbeInputs:
    """The :class:`ProbeInputs` the options ask for (checked before any long work)."""
    if args.inputs != "data":
        return ProbeInputs(args.inputs, args.correlation, args.pairs)
    ProbeInputs("relu", args.correlation, args.pairs)  # validate the numbers first
    if args.input_data not in DATA_DATASETS:
        raise UserError(f"unknown --input-data {args.input_data!r}; choose {', '.join(DATA_DATASETS)} (shipped here)")
    images = load_images(args.input_data)
    return ProbeInputs("data", args.correlation, args.pairs, dataset=args.input_data, images=images)


def load_images(name: str, limit: int = DATA_IMAGES) -> Tensor:
    """The first ``limit`` training images of a shipped dataset, standardized as a network sees
    them (``(x / 255 - mean) / std``): float ``(N, C, H, W)``."""
    return load_labeled_images(name, limit)[0]


def load_labeled_images(name: str, limit: int = DATA_IMAGES, data_dir: str | None = None) -> tuple[Tensor, Tensor]:
    """:func:`load_images` and the images' labels ``(N,)`` (``data_dir``: where datasets that
    are not shipped live, e.g. CIFAR)."""
    from collegial.train.data import standardized_train_images

    return standardized_train_images(name, limit, data_dir)
