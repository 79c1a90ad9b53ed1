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
        from zoo.eval.features import embed_folder
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
