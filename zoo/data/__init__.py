"""Image data for training and evaluation, named by a spec string (`--data SPEC`).

    shapes[?n=6000&size=32&seed=0]   generated and labelled, no files or network (zoo.data.shapes)
    folder:PATH[?size=N&val=0.1]     PATH/<class>/<image>.{jpg,jpeg,png,bmp,gif}
    cifar10-jpeg:PATH[?val_per_class=500]
                                     cifar10-train-jpeg.tar.gz, or its unpacked folder
    tfds:NAME[?size=N]               a tensorflow_datasets data set (needs network or TFDS_DATA_DIR)

    arrays = load_arrays("shapes", split="train")   # ImageArrays: uint8 images, int32 labels
    dataset = load("cifar10-jpeg:../shared/data/cifar10-train-jpeg.tar.gz", split="val")

Splits are "train", "val" and "all" (train then val). Validation sets are fixed and
stratified, drawn with seed 0 (see base.stratified_val_index):
- shapes: n_c // 6 images of each class c (100 per class at the default n=6000);
- folder: round(val * n_c) per class, at least 1 when a class has 2 or more images;
- cifar10-jpeg: val_per_class (500) per class, so 45,000 train / 5,000 val;
- tfds: the data set's own val/validation/test split.
Decoded folder and CIFAR images are cached under $ZOO_CACHE_DIR/data (default
~/.cache/keras-ssl-zoo/data; zoo.cache). Every user-facing problem raises DataError.
"""
import difflib
import functools

import numpy as np
import tensorflow as tf

from zoo.data import shapes as _shapes
from zoo.data import sources
from zoo.data.base import (SPLITS, DataError, ImageArrays, check_split, select_split,
                           stratified_val_index)

__all__ = ["load_arrays", "load", "ImageArrays", "DataError", "SPLITS"]

# kind -> {option: (type, default, minimum, maximum)}
_KINDS = {
    "shapes": {"n": (int, 6000, 20, 10**6), "size": (int, 32, 16, 1024),
               "seed": (int, 0, 0, 2**32 - 1)},
    "folder": {"size": (int, None, 1, 4096), "val": (float, 0.1, 0.0, 0.9)},
    "cifar10-jpeg": {"val_per_class": (int, 500, 0, 5000)},
    "tfds": {"size": (int, None, 1, 4096)},
}
_USAGE = "shapes, folder:PATH, cifar10-jpeg:PATH, tfds:NAME"


def _parse(spec):
    """'kind:arg?key=value&...' -> (kind, arg, {option: value}), every option filled in."""
    head, _, query = spec.partition("?")
    kind, colon, arg = head.partition(":")
    kind = kind.strip()
    if kind not in _KINDS:
        close = difflib.get_close_matches(kind, _KINDS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown data spec {spec!r}: the known kinds are {_USAGE}{hint}")
    if kind == "shapes" and colon:
        raise DataError(f"bad data spec {spec!r}: shapes takes no path; options go after '?', "
                        "e.g. shapes?n=6000&size=32&seed=0")
    if kind != "shapes" and not arg:
        what = "data set name" if kind == "tfds" else "path"
        raise DataError(f"bad data spec {spec!r}: give a {what} after '{kind}:', e.g. {kind}:...")
    allowed = _KINDS[kind]
    options = {key: default for key, (_, default, _, _) in allowed.items()}
    for item in filter(None, query.split("&")):
        key, _, text = item.partition("=")
        if key not in allowed:
            raise DataError(f"unknown option {key!r} in data spec {spec!r}: "
                            f"{kind} accepts {', '.join(allowed)}")
        kind_of, _, lo, hi = allowed[key]
        try:
            value = kind_of(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise DataError(f"option {key}={text!r} in data spec {spec!r} must be "
                            f"{'an integer' if kind_of is int else 'a number'} from {lo} to {hi}")
        options[key] = value
    return kind, arg, options


@functools.lru_cache(maxsize=4)
def _shapes_arrays(n, size, seed):
    """Generated shapes (read-only, shared between calls) and their val indices."""
    images, labels = _shapes.generate(n, size, seed)
    images.flags.writeable = labels.flags.writeable = False
    counts = [max(1, int(np.sum(labels == c)) // 6) for c in range(len(_shapes.CLASS_NAMES))]
    data = ImageArrays(images, labels, list(_shapes.CLASS_NAMES), "shapes")
    return data, stratified_val_index(labels, counts)


def _folder_val_counts(labels, num_classes, fraction):
    """round(fraction * n) of each class's n images, at least 1 and at most n - 1 (if n >= 2)."""
    sizes = np.bincount(labels, minlength=num_classes)
    return [min(max(1, round(fraction * n)), n - 1) if fraction > 0 and n >= 2 else 0
            for n in sizes]


def load_arrays(spec: str, split: str = "train") -> ImageArrays:
    """The images and labels of split "train", "val" or "all" of the data named by `spec`."""
    kind, arg, options = _parse(spec)
    check_split(split, spec)
    if kind == "tfds":
        return sources.read_tfds(arg, split, spec, size=options["size"])
    if kind == "shapes":
        data, val_index = _shapes_arrays(options["n"], options["size"], options["seed"])
    elif kind == "folder":
        data = sources.read_folder(arg, spec, size=options["size"])
        val_index = stratified_val_index(
            data.labels, _folder_val_counts(data.labels, data.num_classes, options["val"]))
    else:
        data = sources.read_cifar10_jpeg(arg, spec)
        k = options["val_per_class"]
        sizes = np.bincount(data.labels, minlength=data.num_classes)
        if sizes.min() <= k:
            raise DataError(f"{spec}: class {data.class_names[sizes.argmin()]} has only "
                            f"{sizes.min()} images, too few to hold out {k} per class; "
                            "lower ?val_per_class=")
        val_index = stratified_val_index(data.labels, [k] * data.num_classes)
    return select_split(data, val_index, split)


def load(spec: str, split: str = "train") -> tf.data.Dataset:
    """load_arrays(spec, split) as a tf.data.Dataset of (uint8 image [H, W, 3], int32 label)."""
    arrays = load_arrays(spec, split)
    return tf.data.Dataset.from_tensor_slices((arrays.images, arrays.labels))
