"""The data layer in one import: image datasets held in memory as uint8 tensors, read from their
files, and batched on the device. Each part lives in its own module:

* :mod:`collegial.train.images`: :class:`ImageData`, its normalization, the validation split
  held out of its training images (:func:`hold_out`), :func:`data_fingerprint`, synthetic data;
* :mod:`collegial.train.readers`: :func:`load_dataset` and the layouts it accepts
  (:func:`has_training_data`, :func:`data_layouts`), over the file formats of
  :mod:`collegial.train.formats`;
* :mod:`collegial.train.loader`: :class:`DeviceLoader`, the on-device batch pipeline.
"""

from __future__ import annotations

from collegial.train.images import (
    NORMALIZATIONS,
    VALIDATION_SEED,
    HeldOut,
    ImageData,
    data_fingerprint,
    hold_out,
    normalization_stats,
    synthetic_dataset,
    validation_indices,
)
from collegial.train.loader import DeviceLoader
from collegial.train.readers import (
    CIFAR_MEAN,
    CIFAR_STD,
    FASHION_MNIST_SYSTEM_DIR,
    data_layouts,
    has_training_data,
    load_dataset,
    shipped_data_available,
    standardized_train_images,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "FASHION_MNIST_SYSTEM_DIR",
    "NORMALIZATIONS",
    "VALIDATION_SEED",
    "DeviceLoader",
    "HeldOut",
    "ImageData",
    "data_fingerprint",
    "data_layouts",
    "has_training_data",
    "hold_out",
    "load_dataset",
    "normalization_stats",
    "shipped_data_available",
    "standardized_train_images",
    "synthetic_dataset",
    "validation_indices",
]
