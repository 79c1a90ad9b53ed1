"""The floor every method must beat: kNN and linear-probe val top-1 of an UNTRAINED encoder
(the shipped encoders' backbone, random init), evaluated exactly as zoo-eval evaluates runs.

    python benchmarks/random_init_baseline.py [--data SPEC] [--seeds 0 1 2] [--layer stage2]

Writes benchmarks/results/random_init_<dataset>.json (with --layer: random_init_<dataset>-<layer>.json,
the floor of `zoo-eval RUN --layer <layer>`); MODEL_CARDS.md shows it beside the trained encoders.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="cifar10-jpeg:../shared/data/cifar10-train-jpeg.tar.gz")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--layer", help="probe an intermediate block (stem, stage1 .. stage4), as zoo-eval --layer does")
    args = p.parse_args(argv)
    import keras
    import tensorflow as tf
    import zoo
    from trainers.evaluate import split_description
    from zoo.encoder import ImageEncoder, layer_encoder
    from zoo.eval import extract_features, knn_accuracy, linear_probe

    train, val = zoo.data.load_arrays(args.data, "train"), zoo.data.load_arrays(args.data, "val")
    runs = []
    for seed in args.seeds:
        started = time.time()
        keras.utils.set_random_seed(seed)
        method = zoo.create("simclr", backbone="resnet18", width=args.width, image_size=train.image_size)
        encoder = ImageEncoder(method.encoder, train.image_size)
        if args.layer:
            encoder = layer_encoder(encoder, args.layer)
        as_float = lambda x: tf.cast(x, tf.float32)  # noqa: E731
        f_train = extract_features(encoder, train.images, preprocess=as_float, verbose=False)
        f_val = extract_features(encoder, val.images, preprocess=as_float, verbose=False)
        knn = float(knn_accuracy(f_train, train.labels, f_val, val.labels, train.num_classes, k=200, temperature=0.1))
        linear = linear_probe(f_train, train.labels, f_val, val.labels, train.num_classes)["top1"]
        runs.append({"seed": seed, "knn_top1": knn, "linear_top1": linear, "feature_dim": int(f_train.shape[1]),
                     "seconds": round(time.time() - started, 1)})
        print(f"seed {seed}: kNN {100 * knn:.2f}  linear {100 * linear:.2f}")
    dataset = {"cifar10-jpeg": "cifar10"}.get(args.data.split(":")[0], args.data.split(":")[0])
    suffix = f"-{args.layer}" if args.layer else ""
    out = os.path.join(ROOT, "benchmarks", "results", f"random_init_{dataset}{suffix}.json")
    report = {"backbone": f"resnet18 w{args.width}", "layer": args.layer or "stage4 (final)", "data": args.data,
              "split": split_description(args.data, len(val)), "runs": runs,
              "command": "python benchmarks/random_init_baseline.py " + " ".join(argv or sys.argv[1:])}
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
