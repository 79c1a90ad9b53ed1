"""Contrastive predictive coding's InfoNCE (CPC, van den Oord et al. 2018; Henaff et al. 2020):
predictions of the patch embeddings k rows ahead classified against other patches."""
import tensorflow as tf

_LARGE = 1e9  # a logit pushed out of every softmax
CPC_NEGATIVES = ("position", "all")


def cpc_logits(pred, z, z_all, k, offset=0, negatives="position"):
    """InfoNCE logits and labels of the predictions k rows ahead, in the direction's frame.

    pred [B, G-k, G, D]: predictions of z[:, k:] from the contexts of rows 0..G-k-1; z [B, G, G, D]
    this replica's patch embeddings, z_all [B_g, G, G, D] the global batch's (rows offset.. are
    z). "position": logits [B, G-k, G, G*G + B_g], columns 0..G*G-1 the same image's patches
    (row-major), then the patch at the target position in each image of the global batch (the
    image's own entry masked out: it is the positive, already among the first columns); label
    (t + k) * G + col. "all": logits [B, G-k, G, B_g*G*G] against every patch of the global batch,
    label (offset + b) * G*G + (t + k) * G + col."""
    b, rows, g, d = tf.shape(pred)[0], pred.shape[1], pred.shape[2], pred.shape[3]
    target = (tf.range(rows)[:, None] + k) * g + tf.range(g)[None, :]  # [G-k, G]
    if negatives == "position":
        same = tf.einsum("btjd,bpd->btjp", pred, tf.reshape(z, [-1, g * g, d]))
        other = tf.einsum("btjd,ntjd->btjn", pred, z_all[:, k:])
        self_mask = tf.one_hot(tf.range(b) + offset, tf.shape(z_all)[0])[:, None, None, :] * _LARGE
        logits = tf.concat([same, other - self_mask], axis=-1)
        labels = tf.broadcast_to(target[None], [b, rows, g])
    elif negatives == "all":
        flat = tf.reshape(z_all, [-1, d])
        logits = tf.einsum("btjd,md->btjm", pred, flat)
        labels = (tf.range(b)[:, None, None] + offset) * (g * g) + target[None]
    else:
        raise ValueError(f"Unknown CPC negatives {negatives!r}; choose from {CPC_NEGATIVES}.")
    return logits, labels


__all__ = ["cpc_logits", "CPC_NEGATIVES"]
