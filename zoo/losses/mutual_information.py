"""Mutual-information estimators and the global-to-local scores they read (DIM, Hjelm et al.
2019; AMDIM, Bachman et al. 2019).

Each estimator takes a score matrix T [N, M] (row i: an anchor, e.g. an image's global vector;
column m: a candidate, e.g. a local feature of some image at some location, candidates gathered
from the whole global batch) and a boolean mask `positive` [N, M], True where the candidate comes
from the anchor's own image; every other entry of the row is a negative. Each returns the MEAN
over the anchors (rows) of a per-anchor quantity, so with equal local batches the replicas' local
results average to the global-batch value. Every row needs a positive and a negative.
`global_local_scores` builds T and the mask from anchor and candidate embeddings.
"""
import math

import tensorflow as tf

from zoo.losses.replicas import gather_across_replicas

_LARGE = 1e9  # a score pushed out of every softmax


def _masked_mean(x, mask):
    return tf.reduce_sum(tf.where(mask, x, 0.0), -1) / tf.reduce_sum(tf.cast(mask, x.dtype), -1)


def _positive_log_softmax(t, positive):
    """log exp(T_im) / (exp(T_im) + sum over row i's negatives of exp(T_in)), every entry [N, M]."""
    neg = tf.reduce_logsumexp(tf.where(positive, -_LARGE, t), axis=-1, keepdims=True)
    return t - tf.reduce_logsumexp(tf.stack([t, tf.broadcast_to(neg, tf.shape(t))]), axis=0)


def _scores_and_mask(scores, positive):
    return tf.cast(scores, tf.float32), tf.cast(positive, tf.bool)


def mi_jsd(scores, positive):
    """Jensen-Shannon estimate (f-GAN form, DIM eq. 4): per anchor, E_P[-softplus(-T)] -
    E_N[softplus(T)] over its positives P and negatives N. At most 0 (= 2 JSD - 2 log 2), the
    limit of perfectly separated scores; all scores 0 give -2 log 2."""
    t, positive = _scores_and_mask(scores, positive)
    return tf.reduce_mean(_masked_mean(-tf.nn.softplus(-t), positive)
                          - _masked_mean(tf.nn.softplus(t), tf.logical_not(positive)))


def mi_dv(scores, positive):
    """Donsker-Varadhan estimate (MINE; DIM eq. 2): per anchor, E_P[T] - log E_N[exp(T)], the log of
    the MEAN of exp(T) over its negatives. Unbounded above."""
    t, positive = _scores_and_mask(scores, positive)
    n_neg = tf.reduce_sum(tf.cast(tf.logical_not(positive), tf.float32), -1)
    log_mean_exp = tf.reduce_logsumexp(tf.where(positive, -_LARGE, t), axis=-1) - tf.math.log(n_neg)
    return tf.reduce_mean(_masked_mean(t, positive) - log_mean_exp)


def infonce_loss(scores, positive):
    """InfoNCE cross-entropy (DIM's and AMDIM's NCE): every positive (i, m) against row i's
    negatives only (other positives of the row are no negatives), -log exp(T_im) / (exp(T_im) +
    sum_{n in N_i} exp(T_in)); mean over the row's positives, then over rows."""
    t, positive = _scores_and_mask(scores, positive)
    return -tf.reduce_mean(_masked_mean(_positive_log_softmax(t, positive), positive))


def mi_infonce(scores, positive):
    """InfoNCE estimate: per anchor, log(1 + |N_i|) minus its InfoNCE cross-entropy. At most
    log(1 + |N_i|), approached as positives outscore negatives without bound."""
    t, positive = _scores_and_mask(scores, positive)
    n_neg = tf.reduce_sum(tf.cast(tf.logical_not(positive), tf.float32), -1)
    return tf.reduce_mean(tf.math.log1p(n_neg) + _masked_mean(_positive_log_softmax(t, positive), positive))


MI_ESTIMATORS = {"jsd": mi_jsd, "dv": mi_dv, "infonce": mi_infonce}


def mi_loss(scores, positive, estimator="infonce"):
    """The loss to minimise: -estimate for "jsd" and "dv"; for "infonce" its cross-entropy
    (= log(1 + |N|) - estimate: the same gradient on the usual scale)."""
    if estimator not in MI_ESTIMATORS:
        raise ValueError(f"Unknown MI estimator {estimator!r}; choose one of {sorted(MI_ESTIMATORS)}.")
    if estimator == "infonce":
        return infonce_loss(scores, positive)
    return -MI_ESTIMATORS[estimator](scores, positive)


def same_image_mask(num_anchors, num_images, per_image, offset=0):
    """positive [num_anchors, num_images * per_image]: True where candidate column m comes from the
    anchor's image, m // per_image == anchor + offset (candidates image-major, as a reshape of
    [num_images, per_image, D] lays them out; offset from gather_across_replicas)."""
    owner = tf.range(num_images * per_image) // per_image
    return tf.equal(owner[None, :], tf.range(num_anchors)[:, None] + offset)


def tanh_clip(x, clip=10.0):
    """AMDIM's soft clipping of scores into (-clip, clip): clip * tanh(x / clip); None or 0: x."""
    if not clip:
        return x
    return clip * tf.tanh(x / clip)


def flatten_locations(x):
    """[B, h, w, E] -> [B, h * w, E]: a map's locations as the candidates of `global_local_scores`."""
    return tf.reshape(x, [-1, x.shape[1] * x.shape[2], x.shape[3]])


def global_local_scores(anchors, candidates, scale=None, clip=None):
    """Scores of every anchor [B, E] (this replica) against every candidate [B, L, E] of the
    GLOBAL batch (gathered here across replicas): (scores [B, B_g * L], positive mask, raw scores
    before clipping). scale: divide the dot products by it (None: sqrt(E)); clip: `tanh_clip`."""
    anchors, candidates = tf.cast(anchors, tf.float32), tf.cast(candidates, tf.float32)
    per_image, dim = candidates.shape[1], candidates.shape[2]
    all_candidates, offset = gather_across_replicas(candidates)
    raw = tf.matmul(anchors, tf.reshape(all_candidates, [-1, dim]), transpose_b=True)
    raw = raw / (scale if scale is not None else math.sqrt(dim))
    positive = same_image_mask(tf.shape(anchors)[0], tf.shape(all_candidates)[0], per_image, offset)
    return tanh_clip(raw, clip), positive, raw


__all__ = ["mi_jsd", "mi_dv", "mi_infonce", "infonce_loss", "mi_loss", "MI_ESTIMATORS", "same_image_mask",
           "tanh_clip", "flatten_locations", "global_local_scores"]
