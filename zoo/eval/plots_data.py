"""The numbers behind the evaluation pictures (`zoo-plot`), kept apart from the drawing so that
each can be checked against an independent reference: a class-spread subsample, the 2-D t-SNE
embedding of features, cosine nearest neighbours, the linear probe's val predictions and the
row-normalised confusion matrix."""
import numpy as np

_EPS = 1e-12


def subsample(n_total, n, seed=0):
    """Sorted indices of `n` of `n_total` items drawn without replacement (seeded), or all of
    them when there are no more than `n`."""
    if n < 1:
        raise ValueError(f"n={n}: the number of images to draw must be 1 or more.")
    if n_total <= n:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def l2_normalise(features):
    features = np.asarray(features, np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), _EPS)


def tsne_embedding(features, seed=0, perplexity=30.0, threads=1):
    """[N, 2] t-SNE (scikit-learn, PCA init, seeded) of the L2-normalised features, so that
    the picture shows the cosine geometry the kNN and retrieval use. The perplexity is capped
    at (N - 1) / 3 for small N (t-SNE needs it below N).

    threads: OpenMP threads of the Barnes-Hut gradient. One by default: on a busy 2-core
    machine its threads spin waiting for each other (measured there: 2,000 x 64 features in
    25 s with 1 thread, 82 s with 2)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 5:
        raise ValueError(f"t-SNE needs a [N, D] feature array with at least 5 rows, got shape {features.shape}; "
                         "use a data set with more val images.")
    perplexity = min(float(perplexity), (len(features) - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    with threadpool_limits(threads):
        return tsne.fit_transform(l2_normalise(features)).astype(np.float32)


def cosine_neighbours(queries, bank, k):
    """(indices [Q, k], cosine similarities [Q, k]) of the `k` rows of `bank` most similar to
    each row of `queries`, most similar first (equal similarities: the lower bank index first)."""
    queries, bank = np.asarray(queries), np.asarray(bank)
    if not 1 <= k <= len(bank):
        raise ValueError(f"k={k}: must be between 1 and the {len(bank)} images of the neighbour bank.")
    similarity = l2_normalise(queries) @ l2_normalise(bank).T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def probe_predictions(train_features, train_labels, val_features, num_classes, epochs=100, weight_decay=None):
    """The val class that zoo-eval's linear probe (zoo.eval.linear, same standardisation, fit
    and default weight decay) predicts for each val feature row."""
    from zoo.eval.linear import DEFAULT_WEIGHT_DECAY, _fit
    train_x, val_x = np.asarray(train_features, np.float32), np.asarray(val_features, np.float32)
    # standardised with the train statistics, as zoo.eval.linear's probe does (+1e-6: a constant dimension)
    mean, std = train_x.mean(axis=0, dtype=np.float64), train_x.std(axis=0, dtype=np.float64) + 1e-6
    train_x, val_x = ((train_x - mean) / std).astype(np.float32), ((val_x - mean) / std).astype(np.float32)
    decay = DEFAULT_WEIGHT_DECAY if weight_decay is None else weight_decay
    w, b = _fit(train_x, np.asarray(train_labels, np.int64), num_classes, int(epochs), 1.0, decay, None)
    return np.argmax(val_x.astype(np.float64) @ w + b, axis=1)


def confusion_matrix(labels, predictions, num_classes, normalise=True):
    """[C, C] matrix: row = true class, column = predicted class. normalise: each row divided
    by its count (the fraction of that class's images given each prediction; a class with no
    images is a row of zeros), else the counts."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must have the same shape.")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1} (num_classes={num_classes}), "
                             f"got {values.min()}..{values.max()}.")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    if not normalise:
        return counts
    totals = counts.sum(axis=1, keepdims=True)
    return np.where(totals > 0, counts / np.maximum(totals, 1), 0.0)
