"""`zoo-embed NAME_OR_PATH --data SPEC --out features.npy`: features of a folder of images.

Writes features.npy ([N, D] float32) and, beside it, features.labels.npy (int32, -1 where
unlabelled) and features.classes.txt (one class name per line).
"""
import argparse
import os


def embed(model, data, split="all", batch_size=256, verbose=True):
    """(features [N, D], ImageArrays) of every image of `data` (default: all splits)."""
    import tensorflow as tf
    import zoo
    from zoo.eval import extract_features
    encoder = zoo.load(model)
    arrays = zoo.data.load_arrays(data, split)
    features = extract_features(encoder, arrays.images, batch_size=batch_size,
                                preprocess=lambda x: tf.cast(x, tf.float32), verbose=verbose)
    return features, arrays


def main(argv=None):
    p = argparse.ArgumentParser(prog="zoo-embed", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="registered model name (zoo.list_models()), export folder, or hf://org/repo")
    p.add_argument("--data", required=True, help="folder:PATH | cifar10-jpeg:PATH | shapes | tfds:NAME")
    p.add_argument("--split", default="all", help="all (default), train or val")
    p.add_argument("--out", default="features.npy")
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    import numpy as np
    from zoo.data import DataError
    try:
        features, arrays = embed(args.model, args.data, args.split, args.batch_size)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    stem = args.out[:-4] if args.out.endswith(".npy") else args.out
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(stem + ".npy", features)
    np.save(stem + ".labels.npy", arrays.labels)
    with open(stem + ".classes.txt", "w") as f:
        f.write("\n".join(arrays.class_names) + "\n")
    print(f"{features.shape[0]} images -> {features.shape[1]}-d features: {os.path.abspath(stem + '.npy')} "
          f"(+ .labels.npy, .classes.txt)")


if __name__ == "__main__":
    main()
