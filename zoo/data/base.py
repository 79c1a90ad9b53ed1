"""The types shared by every data source: ImageArrays, DataError and the train/val split."""
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "all")


class DataError(ValueError):
    """A data spec, path or file that cannot be used; the message names it and the fix."""


@dataclass
class ImageArrays:
    """A labelled image set held in memory."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray  # int32 [N], -1 where unlabelled
    class_names: list
    name: str  # e.g. "shapes", "cifar10-jpeg"

    def __len__(self):
        return len(self.images)

    @property
    def image_size(self):
        return self.images.shape[1]

    @property
    def num_classes(self):
        return len(self.class_names)


def check_split(split, spec):
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for data {spec!r}: "
                        f"use one of {', '.join(SPLITS)}")


def stratified_val_index(labels, val_counts, seed=0):
    """Indices (sorted) of a validation set holding val_counts[c] images of each class c.

    With rng = np.random.default_rng(seed), for each class in label order the images of that
    class (in data order) are permuted by rng.permutation and the first val_counts[c] taken,
    so the split depends only on the labels, their order and the seed.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c, k in enumerate(val_counts):
        members = np.flatnonzero(labels == c)
        picked.append(members[rng.permutation(len(members))[:k]])
    return np.sort(np.concatenate(picked)).astype(np.int64)


def select_split(data, val_index, split):
    """The "train", "val" or "all" (train then val) part of `data`, given its val indices."""
    is_val = np.zeros(len(data), bool)
    is_val[val_index] = True
    train_index = np.flatnonzero(~is_val)
    index = {"train": train_index, "val": val_index,
             "all": np.concatenate([train_index, val_index])}[split]
    return ImageArrays(data.images[index], data.labels[index], list(data.class_names), data.name)
