"""How visible JPEG's 8x8 block grid is in a dataset: the mean absolute difference between
neighbouring pixels across block edges (columns 7|8, 15|16, ... and the same rows) divided by
the mean across every other pair of neighbours. 1.0 means no trace of the grid; above 1 the
edges are stronger, so a patch's offset against the grid can be read from its pixels, and
patch-position tasks (relative patch location, jigsaw) can solve their labels from it. This is
why their CIFAR recipes resample patches (`resample_min_scale`, zoo.patches.cut_patches).

    python benchmarks/jpeg_block_edges.py [--data SPEC] [--split train]

Writes benchmarks/results/jpeg_block_edges_<dataset>.json.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def neighbour_differences(images, axis):
    """Mean |x[i + 1] - x[i]| along axis (1: rows, 2: columns) of uint8 images [N, H, W, C],
    one value per gap i (between pixel i and i + 1), averaged over everything else."""
    x = images.astype(np.float32)
    d = np.abs(np.diff(x, axis=axis))
    other = tuple(a for a in range(4) if a != axis)
    return d.mean(axis=other)


def block_edge_ratio(images, block=8):
    """(ratio, per-gap differences) of `neighbour_differences` over rows and columns together:
    mean at gaps block - 1 | block, 2 block - 1 | 2 block, ... over the mean at the others."""
    gaps = (neighbour_differences(images, 1) + neighbour_differences(images, 2)) / 2
    edge = (np.arange(len(gaps)) % block) == block - 1
    return float(gaps[edge].mean() / gaps[~edge].mean()), gaps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="cifar10-jpeg:../shared/data/cifar10-train-jpeg.tar.gz")
    p.add_argument("--split", default="train")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = p.parse_args(argv)
    import zoo

    arrays = zoo.data.load_arrays(args.data, args.split)
    ratio, gaps = block_edge_ratio(arrays.images)
    dataset = {"cifar10-jpeg": "cifar10"}.get(args.data.split(":")[0], args.data.split(":")[0])
    report = {"data": args.data, "split": args.split, "images": len(arrays.images),
              "block_edge_ratio": round(ratio, 4),
              "mean_abs_difference_per_gap": [round(float(g), 3) for g in gaps],
              "command": "python benchmarks/jpeg_block_edges.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"jpeg_block_edges_{dataset}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"block-edge ratio {ratio:.3f} over {len(arrays.images)} {args.split} images; wrote {path}")


if __name__ == "__main__":
    main()
