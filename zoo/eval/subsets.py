"""Class-balanced label subsets for low-label fine-tuning (1 % and 10 % of the labels, as in the
semi-supervised tables of SimCLR, Chen et al. 2020, and S4L, Zhai et al. 2019).

A subset depends only on the labels, the fraction and the seed, never on an encoder, so every
encoder (and its random-init baseline) is fine-tuned on exactly the same images.
"""
import hashlib

import numpy as np


def balanced_subset(labels, fraction, seed=0):
    """Sorted int64 indices into `labels` of a class-balanced subset: from each class with n
    images, round(fraction * n) of them (halves rounded up, at least 1), drawn without
    replacement. Class c's draw is the first images of one permutation seeded by (seed, c), so a
    smaller fraction's subset is contained in a larger one's for the same seed."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"balanced_subset: labels of shape {labels.shape} and dtype {labels.dtype}; expected a "
                         "non-empty 1-D array of class ids 0, 1, 2, ... (no negative, unlabelled, entries).")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not 0 < fraction <= 1:
        raise ValueError(f"balanced_subset: fraction={fraction!r}; expected a number in (0, 1], "
                         "e.g. 0.01 for 1 % of the labels.")
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, int(np.floor(fraction * len(members) + 0.5)))
        order = np.random.default_rng([int(seed), int(cls)]).permutation(len(members))
        chosen.append(members[order[:count]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def subset_fingerprint(indices):
    """A short sha256 of a subset's indices: equal fingerprints, the same images."""
    return hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16]
