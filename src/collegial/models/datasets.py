"""Input shapes and class counts of the datasets the model families are built for.

(Loading the data lives in :mod:`collegial.train.data`; this is only what a model needs to know.)
"""

from __future__ import annotations

from dataclasses import dataclass

from collegial.errors import UserError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    in_channels: int
    resolution: int


DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in (
        DatasetSpec("cifar10", 10, 3, 32),
        DatasetSpec("cifar100", 100, 3, 32),
        DatasetSpec("imagenet32", 1000, 3, 32),
        DatasetSpec("imagenet64", 1000, 3, 64),
        DatasetSpec("imagenet", 1000, 3, 224),
        DatasetSpec("mnist", 10, 1, 28),
        DatasetSpec("fashion-mnist", 10, 1, 28),
    )
}


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None
