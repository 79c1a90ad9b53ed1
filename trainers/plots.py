"""`zoo-plot KIND TARGET`: the evaluation suite's pictures, one PNG per command.

    zoo-plot embedding  TARGET [--data SPEC] [--n 2000]     # 2-D t-SNE of val features, by class
    zoo-plot retrieval  TARGET [--data SPEC] [--queries 8] [--k 8]  # val queries, nearest train images
    zoo-plot confusion  TARGET [--data SPEC]                # the linear probe's confusion matrix on val
    zoo-plot curves     RUN                                 # training curves from RUN/metrics.jsonl

TARGET is what zoo-eval takes (a zoo-train run folder, a registered model name or an export
folder), resolved and featurised the same way (the features are cached in RUN/features/, shared
with zoo-eval); `curves` needs a run folder. The PNG goes to --out (default RUN/plots/KIND.png,
or plots/NAME-KIND.png for a model) and its path is printed. Drawing needs matplotlib
(`pip install matplotlib`).
"""
import argparse
import json
import os
import sys

import numpy as np

KINDS = ("embedding", "retrieval", "confusion", "curves")
DPI = 100
# metrics.jsonl keys that are bookkeeping, not curves; embedding_std is drawn as its ratio
# (std x sqrt(D)), which does not depend on the feature dimension.
NOT_CURVES = ("epoch", "step", "epoch_seconds", "learning_rate", "embedding_std")
LAST_PANELS = ("val_knn_top1", "embedding_std_ratio", "effective_rank")
PANEL_TITLES = {"loss": "training loss", "val_knn_top1": "val kNN top-1",
                "embedding_std_ratio": "collapse monitor: embedding std x sqrt(D)",
                "effective_rank": "collapse monitor: effective rank"}


class MissingMatplotlib(RuntimeError):
    pass


def _figure(**kwargs):
    """A matplotlib Figure of its own (no pyplot: neither its global state nor the user's backend
    is touched; savefig draws with Agg)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingMatplotlib("zoo-plot draws with matplotlib, which is not installed: pip install matplotlib "
                                "(or pip install 'keras-ssl-zoo[bench]').") from None
    return Figure(dpi=DPI, **kwargs)


def _colours(name):
    import matplotlib
    return matplotlib.colormaps[name].colors


# ------------------------------------------------------------------------------- the numbers

def training_curves(run_dir):
    """[(metric name, epochs int array, values float array)] from RUN/metrics.jsonl, one per
    panel: loss first, then the method's pretext metrics (sorted by name), then val_knn_top1,
    embedding_std_ratio and effective_rank where the run logged them. A metric logged on some
    epochs only (val kNN) has just those epochs; a row repeated for an epoch (a resumed run)
    counts once, its last value."""
    from trainers.runs import read_recipe
    read_recipe(run_dir)  # a clear error for a folder that is not a run (a model has no training curves)
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: the run has not finished an epoch yet.")
    rows = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    rows[int(row["epoch"])] = row
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{path}, line {number}: not a JSON object with an epoch; the file is "
                                     "damaged (zoo-train writes one such line per epoch).") from None
    if not rows:
        raise ValueError(f"{path} is empty: the run has not finished an epoch yet.")
    names = {k for row in rows.values() for k, v in row.items()
             if k not in NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool)}
    pretext = sorted(names - {"loss", *LAST_PANELS})
    order = (["loss"] if "loss" in names else []) + pretext + [n for n in LAST_PANELS if n in names]
    if not order:
        raise ValueError(f"{path} holds no metric to draw (only {', '.join(sorted(NOT_CURVES))}).")
    curves = []
    for name in order:
        epochs = [e for e in sorted(rows) if isinstance(rows[e].get(name), (int, float))]
        curves.append((name, np.array(epochs, np.int64), np.array([rows[e][name] for e in epochs], np.float64)))
    return curves


def _default_out(target, kind, run):
    if run:
        return os.path.join(target, "plots", f"{kind}.png")
    name = os.path.basename(os.path.normpath(target.split("@")[0])) or "model"
    return os.path.join("plots", f"{name}-{kind}.png")


def split_features(target, data=None, splits=("train", "val"), batch_size=512, verbose=True):
    """(info, data spec, {split: ImageArrays}, {split: features [N, D]}) of `target`, resolved
    and featurised as zoo-eval does (trainers.evaluate's encoder resolution, zoo.eval's
    extract_features), with the same cache files in RUN/features/."""
    import tensorflow as tf
    import zoo
    from trainers.evaluate import _encoder_for
    from trainers.recipes import resolve_data
    from zoo.eval import extract_features
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be 1 or more.")
    if data is None and not os.path.exists(os.path.join(target, "config.yaml")):  # before loading the model
        raise ValueError(f"--data is required when plotting a model ({target} is not a run folder).")
    encoder, info, cache_dir, key, recipe = _encoder_for(target)
    data = recipe["data"] if data is None else data
    data = resolve_data(data)
    arrays, feats = {}, {}
    for split in splits:
        arrays[split] = zoo.data.load_arrays(data, split)
        if len(arrays[split]) == 0:
            raise ValueError(f"{data} has an empty {split} split; nothing to plot.")
        cache = None
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            cache = os.path.join(cache_dir, f"{split}-{data.split(':')[0]}-{key}.npz")
        feats[split] = extract_features(encoder, arrays[split].images, batch_size=batch_size, cache_path=cache,
                                        cache_key=f"{key}:{data}", preprocess=lambda x: tf.cast(x, tf.float32),
                                        verbose=verbose)
        if not np.all(np.isfinite(feats[split])):
            raise ValueError(f"{target}: the encoder gives NaN or inf features on the {split} images of {data}; "
                             "its weights are broken (a diverged run?), nothing to plot.")
    return info, data, arrays, feats


def _class_name(arrays, label):
    return arrays.class_names[label] if 0 <= label < len(arrays.class_names) else str(label)


def _title_of(info, data):
    return f"{info.get('run') or info.get('model')} ({info['method']}) on {data}"


# ------------------------------------------------------------------------------- the pictures

def plot_embedding(target, out, data=None, n=2000, seed=0, batch_size=512, verbose=True):
    """2-D t-SNE of `n` val images' features (a seeded subsample), coloured by class, with a
    legend of class names (up to 20 classes; more get a colour bar of class indices).
    Returns (out, the subsample's val indices, their [n, 2] coordinates)."""
    from zoo.eval.plots_data import subsample, tsne_embedding
    info, data, arrays, feats = split_features(target, data, ("val",), batch_size, verbose)
    val = arrays["val"]
    index = subsample(len(val), n, seed)
    points = tsne_embedding(feats["val"][index], seed=seed)
    labels = val.labels[index]
    fig = _figure(figsize=(9, 7), layout="constrained")
    ax = fig.subplots()
    classes = sorted(set(labels.tolist()))
    if len(classes) <= 20:
        colours = _colours("tab10" if len(classes) <= 10 else "tab20")
        for i, label in enumerate(classes):
            chosen = labels == label
            ax.scatter(points[chosen, 0], points[chosen, 1], s=8, color="grey" if label < 0 else colours[i],
                       label=_class_name(val, label) if label >= 0 else "unlabelled")
        fig.legend(loc="outside right upper", markerscale=2, fontsize=9)
    else:
        shown = ax.scatter(points[:, 0], points[:, 1], s=6, c=labels, cmap="turbo")
        fig.colorbar(shown, ax=ax, label="class index")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(index):,} val features (cosine), {_title_of(info, data)}", fontsize=10)
    return _save(fig, out), index, points


def plot_retrieval(target, out, data=None, queries=8, k=8, seed=0, batch_size=512, verbose=True):
    """A grid: each row a val query image, then its `k` nearest train images by cosine
    similarity of the encoder's features, framed green when the neighbour's label is the
    query's, red when it differs (grey: one of them unlabelled). Returns (out, query val
    indices, neighbour train indices [Q, k], their similarities [Q, k])."""
    from zoo.eval.plots_data import cosine_neighbours, subsample
    info, data, arrays, feats = split_features(target, data, ("train", "val"), batch_size, verbose)
    train, val = arrays["train"], arrays["val"]
    rows = subsample(len(val), queries, seed)
    neighbours, similarity = cosine_neighbours(feats["val"][rows], feats["train"], k)
    height = 1.45 * len(rows) + 0.7
    fig = _figure(figsize=(1.3 * (k + 1), height))
    axes = fig.subplots(len(rows), k + 1, squeeze=False)
    # fixed margins (inches): a constrained layout of this many panels costs seconds
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.1 / height, top=1 - 0.8 / height, wspace=0.15,
                        hspace=0.45)
    for r, q in enumerate(rows):
        cells = [(val.images[q], f"query: {_class_name(val, val.labels[q])}", "black")]
        for j, t in enumerate(neighbours[r]):
            labelled = min(train.labels[t], val.labels[q]) >= 0
            colour = "grey" if not labelled else "tab:green" if train.labels[t] == val.labels[q] else "tab:red"
            cells.append((train.images[t], f"{_class_name(train, train.labels[t])} {similarity[r, j]:.3f}", colour))
        for ax, (image, caption, colour) in zip(axes[r], cells):
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(caption, fontsize=7)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    fig.suptitle(f"{k} nearest train images (cosine) of val queries; green: same label, red: other\n"
                 f"{_title_of(info, data)}", fontsize=9, y=1 - 0.08 / height, va="top")
    return _save(fig, out), rows, neighbours, similarity


def plot_confusion(target, out, data=None, batch_size=512, verbose=True):
    """The row-normalised confusion matrix on val of zoo-eval's linear probe (trained on the
    train features), class names on the axes. Returns (out, matrix [C, C], val predictions)."""
    from zoo.eval.plots_data import confusion_matrix, probe_predictions
    info, data, arrays, feats = split_features(target, data, ("train", "val"), batch_size, verbose)
    train, val = arrays["train"], arrays["val"]
    if (val.labels < 0).any() or (train.labels < 0).any():
        raise ValueError(f"{data} has unlabelled images; the confusion matrix needs a label for every image.")
    predictions = probe_predictions(feats["train"], train.labels, feats["val"], train.num_classes)
    matrix = confusion_matrix(val.labels, predictions, train.num_classes)
    top1 = float(np.mean(predictions == val.labels))
    c = len(matrix)
    side = min(30.0, max(6.0, 0.45 * c + 3))
    fig = _figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="fraction of the true class")
    names = [_class_name(train, i) for i in range(c)]
    ax.set_xticks(range(c), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c), names, fontsize=8)
    ax.set_xlabel("predicted class"), ax.set_ylabel("true class")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if matrix[i, j] > 0:
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > 0.5 else "black")
    ax.set_title(f"linear probe on val (top-1 {100 * top1:.1f}%), rows normalised\n{_title_of(info, data)}",
                 fontsize=10)
    return _save(fig, out), matrix, predictions


def plot_curves(run_dir, out):
    """One panel per curve of training_curves(run_dir), against the epoch. Returns (out, curves)."""
    from trainers.runs import read_recipe
    curves = training_curves(run_dir)
    columns = min(3, len(curves))
    lines = -(-len(curves) // columns)
    fig = _figure(figsize=(4.2 * columns, 3.2 * lines + 0.4), layout="constrained")
    axes = fig.subplots(lines, columns, squeeze=False)
    for ax, (name, epochs, values) in zip(axes.flat, curves):
        ax.plot(epochs, values, marker="o" if len(epochs) <= 30 else None, markersize=3)
        ax.set_title(PANEL_TITLES.get(name, f"pretext: {name}"), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    fig.suptitle(f"training curves of {run_dir} ({read_recipe(run_dir)['method']})", fontsize=11)
    return _save(fig, out), curves


def _save(fig, out):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="zoo-plot", description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    helps = {"embedding": "2-D t-SNE of val features, coloured by class",
             "retrieval": "val query images and their nearest train images",
             "confusion": "confusion matrix of the linear probe on val",
             "curves": "training curves from RUN/metrics.jsonl"}
    sub = {kind: kinds.add_parser(kind, help=helps[kind], description=helps[kind]) for kind in KINDS}
    for kind, p in sub.items():
        if kind == "curves":
            p.add_argument("target", metavar="RUN", help="zoo-train run folder")
        else:
            p.add_argument("target", help="zoo-train run folder, registered model name, or export folder")
            p.add_argument("--data", help="data spec or image folder path (default: the run's training data)")
            p.add_argument("--batch-size", type=int, default=512)
        p.add_argument("--out", help=f"PNG file (default: RUN/plots/{kind}.png, or plots/NAME-{kind}.png for a model)")
    sub["embedding"].add_argument("--n", type=int, default=2000, help="val images drawn (default: %(default)s)")
    sub["retrieval"].add_argument("--queries", type=int, default=8, help="query rows (default: %(default)s)")
    sub["retrieval"].add_argument("--k", type=int, default=8, help="neighbours per query (default: %(default)s)")
    for kind in ("embedding", "retrieval"):
        sub[kind].add_argument("--seed", type=int, default=0, help="draws the images (default: %(default)s)")
    args = parser.parse_args(argv)
    from trainers.errors import user_errors
    with user_errors(MissingMatplotlib):
        _figure()  # matplotlib is there: checked before any feature is computed
        for option in ("n", "queries", "k"):
            if getattr(args, option, 1) < 1:
                raise ValueError(f"--{option} {getattr(args, option)}: must be 1 or more.")
        run = os.path.exists(os.path.join(args.target, "config.yaml"))
        out = args.out or _default_out(args.target, args.kind, run)
        if args.kind == "curves":
            plot_curves(args.target, out)
        elif args.kind == "embedding":
            plot_embedding(args.target, out, args.data, args.n, args.seed, args.batch_size)
        elif args.kind == "retrieval":
            plot_retrieval(args.target, out, args.data, args.queries, args.k, args.seed, args.batch_size)
        else:
            plot_confusion(args.target, out, args.data, args.batch_size)
    print(f"wrote {os.path.abspath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
