"""Nearest-neighbour contrastive learning (NNCLR, Dwibedi et al. 2021): the positive of a view is
the nearest neighbour of its embedding in a support set of embeddings of earlier batches."""
import tensorflow as tf

from zoo.losses.classification import cross_entropy
from zoo.losses.replicas import gather_across_replicas


def nearest_neighbours(z, support):
    """(rows, indices): for each row of z [n, d] the row of `support` [K, d] with the largest
    cosine similarity (the smallest Euclidean distance between L2-normalised vectors, NNCLR's
    NN(z, Q)), as stored in `support`, and its index [n]. A constant for the gradient."""
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
    support = tf.stop_gradient(tf.cast(support, tf.float32))
    similarity = tf.matmul(z, tf.math.l2_normalize(support, axis=1), transpose_b=True)
    indices = tf.argmax(similarity, axis=1, output_type=tf.int32)
    return tf.stop_gradient(tf.gather(support, indices)), indices


def nnclr_logits(nn, p, temperature=0.1, cross_replica=True):
    """Logits [n, N] and labels [n] of NNCLR's InfoNCE (eq. 2, with the prediction p in place
    of z+): anchor NN(z_i) against the predictions p_k of the other view of every image k of
    the global batch of N, cosine similarity / temperature; the positive is p_i."""
    nn = tf.math.l2_normalize(tf.cast(nn, tf.float32), axis=1)
    p = tf.math.l2_normalize(tf.cast(p, tf.float32), axis=1)
    all_p, offset = gather_across_replicas(p) if cross_replica else (p, 0)
    labels = tf.range(tf.shape(nn)[0]) + offset
    return tf.matmul(nn, all_p, transpose_b=True) / temperature, labels


def nnclr_loss(nn, p, temperature=0.1, cross_replica=True):
    """NNCLR (Dwibedi et al. 2021, eq. 2): mean over the local anchors i of
    -log exp(NN(z_i).p_i / t) / sum_k exp(NN(z_i).p_k / t), k over the global batch,
    vectors L2-normalised. nn: [n, d] nearest neighbours of one view's projections,
    p: [n, d] predictions of the other view. Symmetrise by adding nnclr_loss(nn_b, p_a)."""
    logits, labels = nnclr_logits(nn, p, temperature, cross_replica)
    return cross_entropy(labels, logits)


__all__ = ["nearest_neighbours", "nnclr_logits", "nnclr_loss"]
