"""Clustering metrics of frozen features (issue 19): how well k-means with k = the number of
classes recovers the classes, without any label used to fit anything.

Protocol (`cluster_evaluate`): L2-normalise the features (as the kNN protocol compares them by
cosine similarity; on the unit sphere squared Euclidean distance is 2 - 2 cos), run k-means
(scikit-learn's `KMeans`, Lloyd, k-means++ seeding, `n_init` restarts, the best inertia kept,
fixed `random_state`), then score the clusters against the labels:

- NMI: normalised mutual information, arithmetic-mean normalisation (sklearn's default);
- ARI: adjusted Rand index;
- accuracy: Hungarian-matched accuracy, the fraction of samples whose cluster is matched to
  their class by the one-to-one cluster -> class matching with the most such samples
  (`scipy.optimize.linear_sum_assignment` on the contingency table; as in DEC, Xie et al.
  2016, and IIC, Ji et al. 2019).

NMI and ARI do not depend on how clusters are numbered; neither does the matched accuracy.
"""
import numpy as np

DEFAULT_N_INIT = 10
DEFAULT_SEED = 0


def _as_ids(values, what):
    ids = np.asarray(values).reshape(-1)
    if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0):
        raise ValueError(f"{what} must be non-negative integers (got dtype {ids.dtype}, min {ids.min()}); "
                         "unlabelled (negative) samples cannot be scored, leave them out first.")
    return ids.astype(np.int64)


def hungarian_accuracy(labels, clusters):
    """Hungarian-matched accuracy in [0, 1] of cluster ids against class labels.

    Each cluster is matched to at most one class and each class to at most one cluster so that
    the number of samples whose cluster is matched to their own class is largest; the accuracy
    is that number over all samples. With more clusters than classes the extra clusters stay
    unmatched and their samples count as wrong (one-to-one, not many-to-one: over-clustering
    earns nothing); with fewer clusters than classes the classes left unmatched count as wrong.
    Cluster and class ids need not be contiguous (an id that does not occur costs nothing)."""
    labels, clusters = _as_ids(labels, "labels"), _as_ids(clusters, "cluster ids")
    if labels.shape != clusters.shape or labels.size == 0:
        raise ValueError(f"need as many cluster ids as labels, at least one: got {clusters.size} cluster ids "
                         f"and {labels.size} labels.")
    from scipy.optimize import linear_sum_assignment
    # contingency[c, y]: samples in cluster c with label y (rectangular is fine for the solver)
    contingency = np.zeros((clusters.max() + 1, labels.max() + 1), np.int64)
    np.add.at(contingency, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    return float(contingency[rows, cols].sum() / labels.size)


def clustering_scores(labels, clusters):
    """{"nmi", "ari", "accuracy"} of cluster ids against class labels (module docstring)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    accuracy = hungarian_accuracy(labels, clusters)  # validates both arrays
    labels, clusters = np.asarray(labels).reshape(-1), np.asarray(clusters).reshape(-1)
    return {"nmi": float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic")),
            "ari": float(adjusted_rand_score(labels, clusters)),
            "accuracy": accuracy}


def kmeans_clusters(features, k, n_init=DEFAULT_N_INIT, seed=DEFAULT_SEED):
    """Cluster ids (int64 [N]) of k-means with `k` clusters on the L2-normalised rows of the
    [N, D] `features` (all-zero rows stay at the origin); deterministic for a given seed."""
    from sklearn.cluster import KMeans
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"k-means needs a [N, D] feature array, got shape {x.shape}.")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k-means k={k!r}: must be an integer of 1 or more (the number of classes).")
    if len(x) < k:
        raise ValueError(f"k-means with k={k} clusters needs at least {k} samples, got {len(x)}; "
                         "evaluate on a larger val split.")
    if isinstance(n_init, bool) or int(n_init) != n_init or n_init < 1:
        raise ValueError(f"k-means n_init={n_init!r}: must be an integer of 1 or more.")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    kmeans = KMeans(n_clusters=int(k), n_init=int(n_init), random_state=int(seed))
    return kmeans.fit_predict(x).astype(np.int64)


def cluster_evaluate(features, labels, num_classes, n_init=DEFAULT_N_INIT, seed=DEFAULT_SEED):
    """k-means with k = `num_classes` on the L2-normalised `features`, scored against `labels`:
    {"k", "nmi", "ari", "accuracy" (Hungarian-matched, in [0, 1]), "n_init", "seed"}."""
    clusters = kmeans_clusters(features, num_classes, n_init=n_init, seed=seed)
    return dict({"k": int(num_classes)}, **clustering_scores(labels, clusters), n_init=int(n_init), seed=int(seed))


__all__ = ["cluster_evaluate", "clustering_scores", "hungarian_accuracy", "kmeans_clusters",
           "DEFAULT_N_INIT", "DEFAULT_SEED"]
