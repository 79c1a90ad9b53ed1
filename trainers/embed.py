"""`zoo-embed NAME_OR_PATH --data SPEC --out features.npy`: features of a folder of images.

Writes features.npy ([N, D] float32) and, beside it, features.labels.npy (int32, -1 where
unlabelled) and features.classes.txt (one class name per line); for a folder also
features.paths.txt (row i of features.npy is the image on line i, relative to the folder).

`--data` is a folder (`folder:PATH` or a plain PATH): its images are read in batches, each
resized to the encoder's input size, and never cached; images in sub-folders get the
sub-folder as class label, images at the top level label -1; anything that is not a regular
file (a named pipe, a socket, a broken link) is skipped. Other specs (shapes,
cifar10-jpeg:PATH, tfds:NAME) go through zoo.data.

An existing output is replaced only with --overwrite; the .npy and its sidecar files are
written together (stale sidecars of an earlier run removed), and only if every feature is
finite.
"""
import argparse
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_images(root):
    """(sorted relative paths, labels, class names) of every image file under root: images in
    a sub-folder are labelled by their top-level sub-folder, images at the top level -1."""
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


def _read(path, size):
    """uint8 image resized (bilinear, as the encoder itself resizes) to size, or None."""
    import numpy as np
    import tensorflow as tf
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (OSError, tf.errors.OpError):
        return None
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    return np.asarray(image, np.float32)


def embed_folder(encoder, root, batch_size=256, verbose=True):
    """(features [N, D], labels [N], class names, relative paths) of every readable image under
    `root`, read batch by batch (4 decoding threads). Each image is resized to the encoder's
    input size on its own, so its features equal those of `encoder(image[None])`."""
    import keras
    import numpy as np
    from zoo.data import DataError
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise DataError(f"{root} is not a folder of images")
    paths, labels, classes = list_images(root)
    if not paths:
        raise DataError(f"no image files ({' '.join(IMAGE_EXTENSIONS)}) under {root}")
    size = encoder.image_size
    size = None if size is None else (size if isinstance(size, tuple) else (size, size))
    call = encoder.predict_on_batch
    features, kept, skipped = None, [], []
    progress = keras.utils.Progbar(len(paths), unit_name="image") if verbose else None
    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = list(range(start, min(start + batch_size, len(paths))))
            images = list(pool.map(lambda i: _read(os.path.join(root, paths[i]), size), chunk))
            good = [i for i, image in zip(chunk, images) if image is not None]
            skipped += [paths[i] for i, image in zip(chunk, images) if image is None]
            batch = [image for image in images if image is not None]
            if batch:
                if size is None:  # no common size: one image at a time
                    out = np.concatenate([np.asarray(call(b[None])) for b in batch])
                else:
                    out = np.asarray(call(np.stack(batch)))
                if features is None:
                    features = np.empty((len(paths), out.shape[1]), np.float32)
                features[len(kept):len(kept) + len(out)] = out
                kept += good
            if progress is not None:
                progress.add(len(chunk))
    if not kept:
        raise DataError(f"none of the {len(paths)} image files under {root} could be decoded "
                        f"(first: {skipped[0]}); they must be JPEG, PNG, BMP or GIF images")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable files under {root} (first: {skipped[0]})")
    return (features[:len(kept)], np.asarray([labels[i] for i in kept], np.int32), classes,
            [paths[i] for i in kept])


def embed(model, data, split="all", batch_size=256, verbose=True):
    """(features [N, D], labels [N], class names, relative paths or None) of every image of
    `data`: a folder (`folder:PATH` or PATH, read in batches, see embed_folder) or any
    zoo.data spec (then `split` picks train, val or all)."""
    import tensorflow as tf
    import zoo
    from trainers.recipes import resolve_data
    from zoo.eval import extract_features
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be 1 or more.")
    data = resolve_data(data)
    encoder = zoo.load(model)
    folder = data[len("folder:"):] if data.startswith("folder:") else None
    if folder is not None and split == "all":
        if "?" in folder and not os.path.isdir(folder):
            raise zoo.data.DataError(f"--data {data!r}: zoo-embed takes no ?options for a folder (images are "
                                     "resized to the encoder's input size); pass folder:PATH")
        return embed_folder(encoder, folder, batch_size, verbose)
    arrays = zoo.data.load_arrays(data, split)
    features = extract_features(encoder, arrays.images, batch_size=batch_size,
                                preprocess=lambda x: tf.cast(x, tf.float32), verbose=verbose)
    return features, arrays.labels, arrays.class_names, None


SIDECARS = {"npy": ".npy", "labels": ".labels.npy", "classes": ".classes.txt", "paths": ".paths.txt"}


def output_paths(out, overwrite=False):
    """{kind: path} of the .npy and its sidecars for `--out`; refuses an output that exists
    (unless `overwrite`) or a folder that cannot hold it, before anything is computed."""
    stem = out[:-4] if out.endswith(".npy") else out
    paths = {kind: stem + suffix for kind, suffix in SIDECARS.items()}
    if os.path.isdir(out) or os.path.isdir(paths["npy"]) or not os.path.basename(stem):
        raise ValueError(f"--out {out!r} is a folder; give a file name, e.g. {os.path.join(out, 'features.npy')}.")
    existing = [path for path in paths.values() if os.path.lexists(path)]
    if existing and not overwrite:
        raise FileExistsError(f"--out {out!r}: {', '.join(existing)} already exist(s); pass --overwrite to "
                              "replace them, or choose another --out.")
    folder = os.path.dirname(os.path.abspath(paths["npy"]))
    parent = folder
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out!r}: cannot write into {parent}.")
    return paths


def write_outputs(outputs, features, labels, classes, paths):
    """Write every output to a temporary file first, then rename them all into place and
    remove a sidecar of an earlier run that this one does not write (.paths.txt)."""
    import numpy as np
    bad = int(np.sum(~np.all(np.isfinite(features), axis=1)))
    if bad:
        raise ValueError(f"the encoder gives NaN or inf features for {bad} of the {len(features)} images; "
                         "its weights are broken (a diverged run?). Nothing was written.")
    os.makedirs(os.path.dirname(os.path.abspath(outputs["npy"])), exist_ok=True)
    contents = {"npy": features, "labels": np.asarray(labels, np.int32), "classes": "".join(c + "\n" for c in classes)}
    if paths is not None:
        contents["paths"] = "".join(p + "\n" for p in paths)
    temporary = {kind: f"{outputs[kind]}.tmp-{os.getpid()}" for kind in contents}
    try:
        for kind, value in contents.items():
            if isinstance(value, str):
                with open(temporary[kind], "w") as f:
                    f.write(value)
            else:
                with open(temporary[kind], "wb") as f:
                    np.save(f, value)
        for kind in contents:
            os.replace(temporary[kind], outputs[kind])
    finally:
        for path in temporary.values():
            if os.path.exists(path):
                os.remove(path)
    for kind, path in outputs.items():
        if kind not in contents and os.path.lexists(path):
            os.remove(path)


def main(argv=None):
    p = argparse.ArgumentParser(prog="zoo-embed", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="registered model name (zoo.list_models()), export folder, or hf://org/repo")
    p.add_argument("--data", required=True, help="PATH or folder:PATH (a folder of images) | cifar10-jpeg:PATH | "
                                                 "shapes | tfds:NAME")
    p.add_argument("--split", default="all", help="all (default), train or val (for a folder: all only, in "
                                                  "file order, unless given as a zoo.data split)")
    p.add_argument("--out", default="features.npy")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (and its sidecar files)")
    args = p.parse_args(argv)
    from trainers.errors import user_errors
    with user_errors():
        outputs = output_paths(args.out, args.overwrite)  # checked before any feature is computed
        if args.batch_size < 1:
            raise ValueError(f"--batch-size {args.batch_size}: must be 1 or more.")
        features, labels, classes, paths = embed(args.model, args.data, args.split, args.batch_size)
        write_outputs(outputs, features, labels, classes, paths)
    extra = ".labels.npy, .classes.txt" + (", .paths.txt" if paths is not None else "")
    print(f"{features.shape[0]} images -> {features.shape[1]}-d features: {os.path.abspath(outputs['npy'])} "
          f"(+ {extra})")


if __name__ == "__main__":
    main()
