"""Image sets read from disk (`folder:`, `cifar10-jpeg:`) or through tensorflow_datasets (`tfds:`).

Disk sources are decoded once and cached as .npz files under $ZOO_CACHE_DIR/data (default
~/.cache/keras-ssl-zoo/data; zoo.cache), keyed by the absolute path, the files' sizes and mtimes and the
resize option, so a second load only reads one file. Unreadable image files are skipped and
counted, with one warning per load.
"""
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import warnings

import numpy as np
import tensorflow as tf

from zoo.cache import cache_dir, write_atomically
from zoo.data.base import DataError, ImageArrays

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")  # tf.io.decode_image reads no TIFF: Pillow decodes these
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
CIFAR10_HINT = "../shared/data/cifar10-train-jpeg.tar.gz"
OFFLINE_ALTERNATIVES = (
    "offline alternatives: --data folder:PATH (one sub-folder of images per class), "
    f"--data cifar10-jpeg:{CIFAR10_HINT}, --data shapes (generated), or set TFDS_DATA_DIR "
    "to a pre-downloaded tensorflow_datasets copy")
_CACHE_FORMAT = 1  # bump when decoding changes, to invalidate old cache files
_PROGRESS_EVERY = 10_000


def decode_image(data):
    """JPEG/PNG/BMP/GIF (first frame)/WebP or TIFF bytes -> uint8 [H, W, 3]; tf.errors.OpError
    or OSError if unreadable."""
    if data[:4] in _TIFF_MAGIC:
        from PIL import Image
        try:
            with Image.open(io.BytesIO(data)) as image:
                return np.asarray(image.convert("RGB"), np.uint8)
        except (ValueError, Image.DecompressionBombError) as e:  # Pillow's other errors are OSErrors
            raise OSError(f"cannot decode TIFF: {e}") from e
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def _resize(image, hw):
    if image.shape[:2] == tuple(hw):
        return image
    resized = tf.round(tf.image.resize(image, hw, antialias=True))
    return tf.cast(tf.clip_by_value(resized, 0, 255), tf.uint8).numpy()


def _warn_skipped(where, count, first):
    warnings.warn(f"skipped {count} unreadable files under {where} (first: {first})")


_SIZES_SHOWN = 5  # the other image sizes a resize warning names


def _warn_resized(where, arrays):
    """Say (once: Python shows a warning's text once) that images of other sizes were resized to
    that of the first image; nothing for arrays cached before "resized" was recorded."""
    count = int(arrays.get("resized", 0))
    if not count:
        return
    height, width = arrays["images"].shape[1:3]
    sizes = [f"{w}x{h}" for h, w in arrays["other_sizes"]]
    others = ", ".join(sizes[:_SIZES_SHOWN]) + (", ..." if len(sizes) > _SIZES_SHOWN else "")
    warnings.warn(f"the images under {where} have different sizes: {count} of {len(arrays['images'])} "
                  f"({others} px) were resized to {width}x{height} px (width x height), the size of the first "
                  f"image; add ?size=N to the data spec to resize every image to NxN instead.")


def _decode_all(entries, n, where, size=None):
    """Decode n (label, name, bytes or file path) entries into one uint8 array.

    Images take the size `size` x `size`, or else that of the first readable image, and are
    resized to it when they differ (warned about once when `size` is not given). Unreadable files
    are skipped, counted and warned about once.
    """
    images, kept, skipped = None, 0, []
    other_sizes, resized = set(), 0  # (height, width) of images resized to the first one's size
    labels = np.empty(n, np.int32)
    for i, (label, name, payload) in enumerate(entries, 1):
        try:
            if not isinstance(payload, bytes):
                with open(payload, "rb") as f:
                    payload = f.read()
            image = decode_image(payload)
        except (OSError, tf.errors.OpError):
            skipped.append(name)
            continue
        if images is None:
            hw = (size, size) if size else image.shape[:2]
            images = np.empty((n, *hw, 3), np.uint8)
        if size is None and image.shape[:2] != hw:
            other_sizes.add(image.shape[:2])
            resized += 1
        images[kept], labels[kept] = _resize(image, hw), label
        kept += 1
        if n >= _PROGRESS_EVERY and (i % _PROGRESS_EVERY == 0 or i == n):
            print(f"decoding {where}: {i}/{n} images", file=sys.stderr, flush=True)
    if images is None:
        raise DataError(f"none of the {n} image files under {where} could be decoded "
                        f"(first: {skipped[0]}); they must be JPEG, PNG, BMP, GIF, WebP or TIFF images")
    if skipped:
        _warn_skipped(where, len(skipped), skipped[0])
    arrays = {"images": images[:kept], "labels": labels[:kept],
              "skipped": np.int64(len(skipped)),
              "first_skipped": np.str_(skipped[0] if skipped else ""),
              "resized": np.int64(resized),
              "other_sizes": np.array(sorted(other_sizes)[:_SIZES_SHOWN + 1], np.int64).reshape(-1, 2)}
    _warn_resized(where, arrays)
    return arrays


def _cached(key, build):
    """The arrays build() returns, read from the cache file for `key` if there is one.

    The cache file ($ZOO_CACHE_DIR/data, zoo.cache) is written atomically, so a crash or a
    concurrent reader never sees half a file; an unwritable cache only costs a warning.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_dir("data")
    path = os.path.join(folder, f"{key['kind']}-{digest}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        if arrays["skipped"]:
            _warn_skipped(key["path"], int(arrays["skipped"]), str(arrays["first_skipped"]))
        _warn_resized(key["path"], arrays)
        return arrays
    arrays = build()
    try:
        write_atomically(path, lambda f: np.savez(f, **arrays), suffix=".npz.tmp")
    except OSError as e:
        warnings.warn(f"could not cache decoded images in {folder} ({e}); "
                      "set ZOO_CACHE_DIR to a writable folder")
    return arrays


def _list_folder(root, spec):
    """Sorted class names and the (label, path) of every image file under root/<class>/."""
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{spec}: {root} has no class sub-folders; "
                        "put the images of each class in their own folder: "
                        f"{root}/<class>/<image>.jpg")
    files, empty = [], []
    for label, name in enumerate(classes):
        found = sorted(os.path.join(dirpath, f)
                       for dirpath, _, names in os.walk(os.path.join(root, name))
                       for f in names if f.lower().endswith(IMAGE_EXTENSIONS))
        files += [(label, path) for path in found]
        empty += [] if found else [name]
    if len(empty) == len(classes):
        raise DataError(f"{spec}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in the class "
                        f"folders under {root}; expected {root}/<class>/<image>.jpg")
    if empty:
        raise DataError(f"{spec}: class folders without image files under {root}: "
                        f"{', '.join(empty)}; add images or remove those folders")
    return classes, files


def _folder_key(kind, root, files, size):
    """Cache key of a folder: its path and every image file's name, size and mtime."""
    listing = hashlib.sha256()
    for _, path in files:
        st = os.stat(path)
        listing.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"kind": kind, "path": root, "files": listing.hexdigest(), "size": size,
            "format": _CACHE_FORMAT}


def _existing(path, spec, hint=""):
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise DataError(f"{spec}: path {path} does not exist{hint}")
    return path


def read_folder(path, spec, size=None):
    """All images of an image folder (PATH/<class>/<image>), class names = sorted folder names."""
    root = _existing(path, spec, "; pass a folder with one sub-folder of images per class")
    if not os.path.isdir(root):
        raise DataError(f"{spec}: {root} is not a folder; pass a folder with one sub-folder "
                        "of images per class")
    classes, files = _list_folder(root, spec)
    arrays = _cached(_folder_key("folder", root, files, size), lambda: _decode_all(
        ((label, p, p) for label, p in files), len(files), root, size))
    name = os.path.basename(root) or "folder"
    return ImageArrays(arrays["images"], arrays["labels"], classes, name)


def _read_tar(path, spec):
    """(class, member name, bytes) of the train/<class>/<file>.jpg members, sorted by name."""
    pattern = re.compile(r"(?:\./)?train/([^/]+)/[^/]+\.jpe?g$", re.IGNORECASE)
    members = []
    try:
        with tarfile.open(path) as tar:
            for member in tar:  # one sequential pass: seeking back in a .gz re-reads it
                match = pattern.match(member.name)
                if match and member.isfile():
                    members.append((match.group(1), member.name, tar.extractfile(member).read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{spec}: cannot read {path} as a tar archive ({e}); pass "
                        f"cifar10-train-jpeg.tar.gz (e.g. {CIFAR10_HINT}) or its unpacked "
                        "folder") from e
    return sorted(members, key=lambda m: m[1])


def _check_cifar_classes(classes, where, spec):
    if list(classes) != CIFAR10_CLASSES:
        raise DataError(f"{spec}: expected the CIFAR-10 layout train/<class>/<NNNN>.jpg with "
                        f"classes {' '.join(CIFAR10_CLASSES)} in {where}, found classes "
                        f"{list(classes)}; use folder:PATH for other image folders")


def read_cifar10_jpeg(path, spec):
    """The 50,000 CIFAR-10 training images, from cifar10-train-jpeg.tar.gz or its unpacked folder.

    Images are ordered by file name (train/<class>/<NNNN>.jpg), so the order, and with it
    the validation split, is the same on every machine.
    """
    path = _existing(path, spec, f"; the CIFAR-10 JPEG tarball is beside the project: "
                                 f"--data cifar10-jpeg:{CIFAR10_HINT}")
    if os.path.isdir(path):
        root = os.path.join(path, "train") if os.path.isdir(os.path.join(path, "train")) else path
        classes, files = _list_folder(root, spec)
        _check_cifar_classes(classes, root, spec)
        arrays = _cached(_folder_key("cifar10-jpeg", root, files, None), lambda: _decode_all(
            ((label, p, p) for label, p in files), len(files), root))
    else:
        def build():
            members = _read_tar(path, spec)
            classes = sorted({c for c, _, _ in members})
            _check_cifar_classes(classes, path, spec)
            return _decode_all(((classes.index(c), name, data) for c, name, data in members),
                               len(members), path)

        st = os.stat(path)
        key = {"kind": "cifar10-jpeg", "path": path, "bytes": st.st_size,
               "mtime_ns": st.st_mtime_ns, "format": _CACHE_FORMAT}
        arrays = _cached(key, build)
    return ImageArrays(arrays["images"], arrays["labels"], list(CIFAR10_CLASSES), "cifar10-jpeg")


def _offline():
    return any(os.environ.get(v, "0") not in ("", "0") for v in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"))


def read_tfds(name, split, spec, size=None):
    """Split "train", "val" or "all" of a tensorflow_datasets data set, as arrays.

    "val" is the data set's "val", "validation" or "test" split, the first that exists.
    With ZOO_OFFLINE=1 (or HF_HUB_OFFLINE=1) nothing is downloaded: only a copy already in
    TFDS_DATA_DIR (default ~/tensorflow_datasets) is used.
    """
    import tensorflow_datasets as tfds  # slow to import, so only when asked for

    try:
        builder = tfds.builder(name, data_dir=os.environ.get("TFDS_DATA_DIR"))
        if not _offline():
            builder.download_and_prepare()
        if not builder.is_prepared():
            raise FileNotFoundError(f"no prepared copy in {builder.data_dir}")
    except Exception as e:  # tfds fails in many ways offline: not found, network, missing extras
        raise DataError(
            f"{spec}: the tensorflow_datasets data set {name!r} could not be downloaded or found "
            f"({type(e).__name__}: {str(e)[:300]}). This machine may be offline; "
            f"{OFFLINE_ALTERNATIVES}") from e
    available = list(builder.info.splits.keys())
    val_split = next((s for s in ("val", "validation", "test") if s in available), None)
    if "train" not in available or val_split is None:
        raise DataError(f"{spec}: needs a train split and a val/validation/test split, "
                        f"{name} has {available}")
    parts = {"train": ["train"], "val": [val_split], "all": ["train", val_split]}[split]
    images, labels = [], []
    for part in parts:
        for image, label in tfds.as_numpy(builder.as_dataset(split=part, as_supervised=True)):
            image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
            images.append(_resize(image, (size, size)) if size else image)
            labels.append(label)
    if len({im.shape for im in images}) > 1:
        raise DataError(f"{spec}: the images of {name} differ in size; add a size option to "
                        f"resize them, e.g. --data '{spec}{'&' if '?' in spec else '?'}size=64'")
    label_feature = builder.info.features[builder.info.supervised_keys[1]]
    return ImageArrays(np.stack(images).astype(np.uint8), np.asarray(labels, np.int32),
                       list(label_feature.names), name)
