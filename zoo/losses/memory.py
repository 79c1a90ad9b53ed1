"""InfoNCE against stored features: the negatives come from a memory of earlier batches, not
from the current batch. MoCo (He et al. 2020) reads a FIFO queue of momentum keys; NPID (Wu et
al. 2018) and PIRL (Misra & van der Maaten 2020) a bank of one entry per training image
(zoo.memory_bank). The stored features are constants for the gradient.
"""
import tensorflow as tf

from zoo.losses.classification import cross_entropy

_LARGE = 1e9  # a logit pushed out of every softmax


def moco_logits(q, k, queue, temperature):
    """Logits [B, 1 + K] and labels [B] (all 0) of MoCo's InfoNCE: column 0 is q.k (the positive),
    columns 1..K q.queue_j. q, k: [B, D] L2-normalised; queue: [K, D] (a constant)."""
    q = tf.cast(q, tf.float32)
    k = tf.stop_gradient(tf.cast(k, tf.float32))
    queue = tf.stop_gradient(tf.cast(queue, tf.float32))
    l_pos = tf.reduce_sum(q * k, axis=1, keepdims=True)
    l_neg = tf.matmul(q, queue, transpose_b=True)
    logits = tf.concat([l_pos, l_neg], axis=1) / temperature
    return logits, tf.zeros(tf.shape(q)[:1], tf.int32)


def npid_logits(v, ids, bank, temperature, negatives=None):
    """Logits and labels of NPID's non-parametric softmax.

    v: [B, D] normalised embeddings; ids: [B] rows of the images in `bank` [N, D].
    Full softmax (negatives None): logits v @ bank^T / t, [B, N], label = id.
    Sampled (negatives [B, K] bank rows): column 0 is the image's own entry, columns 1..K the
    drawn entries (those equal to the image's own id are masked out), label 0."""
    bank = tf.stop_gradient(tf.cast(bank, tf.float32))
    if negatives is None:
        return tf.matmul(v, bank, transpose_b=True) / temperature, ids
    rows = tf.concat([ids[:, None], tf.cast(negatives, tf.int32)], axis=1)  # [B, 1 + K]
    logits = tf.einsum("bd,bkd->bk", v, tf.gather(bank, rows)) / temperature
    collide = tf.concat([tf.zeros_like(ids[:, None], tf.bool), tf.equal(rows[:, 1:], ids[:, None])], axis=1)
    logits = tf.where(collide, tf.constant(-_LARGE, logits.dtype), logits)
    return logits, tf.zeros_like(ids)


def pirl_loss(g, f, ids, bank, temperature, loss_weight, negatives=None):
    """(loss, jigsaw logits, image logits, labels): lambda * CE(m_I vs g) + (1 - lambda) * CE(m_I vs f)
    over the bank's entries (see npid_logits); g, f [B, D] L2-normalised, ids [B] bank rows."""
    logits_j, labels = npid_logits(g, ids, bank, temperature, negatives)
    logits_i, _ = npid_logits(f, ids, bank, temperature, negatives)
    loss = loss_weight * cross_entropy(labels, logits_j) + (1.0 - loss_weight) * cross_entropy(labels, logits_i)
    return loss, logits_j, logits_i, labels


__all__ = ["moco_logits", "npid_logits", "pirl_loss"]
