"""A folder of image files read as they are, without a cache: the listing (paths, labels from
the top-level sub-folder, class names) and one image at a time, for embedding a folder
(`zoo.embed`, `zoo-embed`). Training reads folders through `zoo.data.load` (decoded once,
cached) instead."""
import os
import stat
import warnings

from zoo.data.sources import IMAGE_EXTENSIONS, decode_image


def list_images(root):
    """(sorted relative paths, labels, class names) of every image file under root: images in
    a sub-folder are labelled by their top-level sub-folder, images at the top level -1.
    Hidden files and folders are left out; entries that are not regular files (a named pipe, a
    socket, a broken link) are skipped with a warning."""
    paths, special = [], []
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for n in names:
            if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."):
                (paths if _is_regular_file(os.path.join(dirpath, n)) else special).append(
                    os.path.relpath(os.path.join(dirpath, n), root))
    if special:  # reading a named pipe would wait forever
        warnings.warn(f"skipped {len(special)} entries under {root} that are not regular files "
                      f"(first: {sorted(special)[0]})")
    paths.sort()
    classes = sorted({p.split(os.sep, 1)[0] for p in paths if os.sep in p})
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[p.split(os.sep, 1)[0]] if os.sep in p else -1 for p in paths]
    return paths, labels, classes


def _is_regular_file(path):
    try:
        return stat.S_ISREG(os.stat(path).st_mode)  # follows symbolic links
    except OSError:
        return False


def read_image(path, size):
    """The image at `path` as float32 [H, W, 3] in 0..255, resized (bilinear, as the encoder
    itself resizes) to `size` (height, width) unless None, or None if it cannot be decoded."""
    import numpy as np
    import tensorflow as tf
    try:
        with open(path, "rb") as f:
            image = decode_image(f.read())
    except (OSError, tf.errors.OpError):
        return None
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    return np.asarray(image, np.float32)


__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image"]
