"""Weighted k-nearest-neighbour classification on frozen features.

The InstDisc protocol (Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", CVPR 2018), used as the kNN monitor of solo-learn, lightly and
DINO: L2-normalise the features, take the k training features with the highest cosine
similarity to each query, weight each by exp(similarity / temperature), sum the weights per
class and predict the heaviest class.

The evaluation functions (knn_evaluate, knn_accuracy, encoder_knn_accuracy) cap k at the
smallest class's count in the train features (`knn_k`): with k = 200 and 45 images per class
each vote is mostly other classes' neighbours (issue 17: a 450-image folder measured 68 % at
k = 200 against 90 % at k = 10). At CIFAR-10's 4,500 per class the cap changes nothing.
knn_predict takes k as given (clipped to the bank size only).
"""
import numpy as np
import tensorflow as tf


@tf.function(reduce_retracing=True)
def _class_scores(queries, bank, bank_labels, k, temperature, num_classes):
    """Summed neighbour weights per class, [B, num_classes], for L2-normalised queries."""
    similarity = tf.linalg.matmul(queries, bank, transpose_b=True)  # [B, N] cosines
    top_sim, top_idx = tf.math.top_k(similarity, k=k)  # ties: lower bank index first
    # exp((s - s_max) / t) is exp(s / t) rescaled per query: same argmax, no float32
    # overflow for small temperatures (exp(1 / 0.01) is already inf).
    weights = tf.exp((top_sim - top_sim[:, :1]) / temperature)
    rows = tf.range(tf.shape(queries)[0])[:, None]
    segments = rows * num_classes + tf.gather(bank_labels, top_idx)
    scores = tf.math.unsorted_segment_sum(weights, segments, tf.shape(queries)[0] * num_classes)
    return tf.reshape(scores, [-1, num_classes])


def knn_predict(train_features, train_labels, query_features, num_classes, k=200,
                temperature=0.1, batch_size=1024):
    """InstDisc weighted-kNN class predictions (int64 [Q]) for `query_features`.

    k defaults to 200 and temperature to 0.1 as in InstDisc and METHODS.md; k is clipped to
    the bank size. Ties between classes go to the lowest class index. Queries are processed
    `batch_size` at a time so the [batch, N] similarity matrix stays small.
    """
    bank = tf.math.l2_normalize(tf.convert_to_tensor(train_features, tf.float32), axis=1)
    bank_labels = tf.convert_to_tensor(np.asarray(train_labels), tf.int32)
    queries = tf.math.l2_normalize(tf.convert_to_tensor(query_features, tf.float32), axis=1)
    k = tf.constant(min(int(k), int(bank.shape[0])))
    temperature = tf.constant(float(temperature))
    predictions = []
    for start in range(0, int(queries.shape[0]), batch_size):
        scores = _class_scores(queries[start:start + batch_size], bank, bank_labels, k,
                               temperature, tf.constant(int(num_classes)))
        predictions.append(np.argmax(scores.numpy(), axis=1))  # np.argmax: first maximum
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)


def _smallest_class(train_labels):
    """The train count of the least frequent class present (negative labels: unlabelled)."""
    labels = np.asarray(train_labels).reshape(-1)
    counts = np.bincount(labels[labels >= 0])
    if not counts.any():
        raise ValueError("kNN needs labelled train features; every train label is negative (unlabelled).")
    return int(counts[counts > 0].min())


def knn_k(train_labels, k=200):
    """The k the evaluation uses: min(k, the train count of the smallest class present in
    `train_labels`), so that a query's k neighbours can all come from its own class."""
    if int(k) < 1:
        raise ValueError(f"kNN k={k}: must be 1 or more.")
    return min(int(k), _smallest_class(train_labels))


def knn_evaluate(train_features, train_labels, query_features, query_labels, num_classes,
                 k=200, temperature=0.1):
    """{"top1": accuracy in [0, 1], "k": the k used (knn_k: capped by the smallest class),
    "k_requested": k, "smallest_class": that class's train count, "temperature"}."""
    used = knn_k(train_labels, k)
    predictions = knn_predict(train_features, train_labels, query_features, num_classes,
                              k=used, temperature=temperature)
    return {"top1": float(np.mean(predictions == np.asarray(query_labels))), "k": used, "k_requested": int(k),
            "smallest_class": _smallest_class(train_labels), "temperature": float(temperature)}


def knn_accuracy(train_features, train_labels, query_features, query_labels, num_classes,
                 k=200, temperature=0.1):
    """Top-1 accuracy in [0, 1] of `knn_predict` on labelled queries, with k capped by the
    smallest class's train count (knn_k; knn_evaluate also returns the k used)."""
    return knn_evaluate(train_features, train_labels, query_features, query_labels, num_classes,
                        k=k, temperature=temperature)["top1"]


def encoder_knn_accuracy(encoder, bank_images, bank_labels, query_images, query_labels, num_classes,
                         k=200, temperature=0.1):
    """kNN top-1 of an encoder's features: the uint8 `bank_images` (features scaled to [0, 1]
    as in extract_features) vote for the labels of `query_images`, k capped by the bank's
    smallest class (knn_k). Used by the training monitor and the quick start."""
    from zoo.eval.features import extract_features
    bank = extract_features(encoder, bank_images, verbose=False)
    query = extract_features(encoder, query_images, verbose=False)
    return knn_accuracy(bank, bank_labels, query, query_labels, num_classes, k=k, temperature=temperature)
