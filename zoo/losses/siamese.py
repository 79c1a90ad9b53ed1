"""Losses of the two-branch methods that predict one view's embedding from the other's, with
the target branch held constant (stop-gradient): BYOL and SimSiam (negative cosine, no
negatives), MoCo v3 (InfoNCE against the momentum keys of the global batch).

Every function returns the mean over the LOCAL examples (the base class divides by the
replica count to get the global-batch mean); targets (z, keys) get no gradient.
"""
import tensorflow as tf

from zoo.losses.classification import cross_entropy
from zoo.losses.replicas import gather_across_replicas


def _unit(x):
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=1)


def negative_cosine(p, z):
    """SimSiam's D(p, z) = -cos(p_i, stop_gradient(z_i)), mean over the local batch. p, z: [B, D]."""
    return -tf.reduce_mean(tf.reduce_sum(_unit(p) * tf.stop_gradient(_unit(z)), axis=1))


def byol_loss(p_a, p_b, z_a, z_b):
    """BYOL (Grill et al. 2020, eq. 2 and its symmetrisation): the normalised MSE
    ||p_a/|p_a| - z_b/|z_b|||^2 = 2 - 2 cos(p_a, z_b), plus the same with the views swapped,
    each a mean over the local batch; range [0, 8]. p_*: online predictions of views a and b;
    z_*: target projections of views a and b (no gradient)."""
    return 4.0 + 2.0 * (negative_cosine(p_a, z_b) + negative_cosine(p_b, z_a))


def simsiam_loss(p_a, p_b, z_a, z_b):
    """SimSiam (Chen & He 2021, eq. 2-4): D(p_a, stopgrad(z_b)) / 2 + D(p_b, stopgrad(z_a)) / 2
    with D the negative cosine; range [-1, 1]. (BYOL's loss is 4 + 4 x this.)"""
    return 0.5 * (negative_cosine(p_a, z_b) + negative_cosine(p_b, z_a))


def mocov3_logits(q, k, temperature=1.0, cross_replica=True):
    """Logits [B, R*B] = cos(q_i, k_j) / t of every local query against the keys of the GLOBAL
    batch (gathered from every replica, no gradient), and labels [B]: the column of the key of
    the query's own image (its index in the global batch)."""
    q, k = _unit(q), tf.stop_gradient(_unit(k))
    if cross_replica:
        all_k, offset = gather_across_replicas(k)
    else:
        all_k, offset = k, 0
    labels = tf.range(tf.shape(q)[0]) + offset
    return tf.matmul(q, tf.stop_gradient(all_k), transpose_b=True) / temperature, labels


def mocov3_loss(q_a, q_b, k_a, k_b, temperature=1.0, cross_replica=True):
    """MoCo v3 (Chen, Xie, He 2021, algorithm 1): ctr(q_a, k_b) + ctr(q_b, k_a), where ctr is
    the softmax cross-entropy of `mocov3_logits` (in-batch negatives: the other images' keys of
    the global batch, no queue) multiplied by 2t, as in the paper's pseudocode. q_*: online
    predictions of views a and b; k_*: momentum keys of views a and b."""
    def ctr(q, k):
        logits, labels = mocov3_logits(q, k, temperature, cross_replica)
        return cross_entropy(labels, logits) * (2.0 * temperature)
    return ctr(q_a, k_b) + ctr(q_b, k_a)


__all__ = ["negative_cosine", "byol_loss", "simsiam_loss", "mocov3_logits", "mocov3_loss"]
