"""Self-supervised losses as plain functions on tensors.

Inside a `tf.distribute` replica context, contrastive losses gather the other replicas'
embeddings as extra negatives (`cross_replica=True`), so N devices with B/N images each see the
same 2B-view batch as one device with B images. Each function returns the MEAN over the local
examples; the method base class divides by the number of replicas, which (with equal local
batches, guaranteed by `drop_remainder=True`) gives the mean over the global batch.
"""
import tensorflow as tf

_LARGE = 1e9


def _replica_context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def gather_across_replicas(x):
    """Concatenate x from every replica along axis 0 (differentiable); returns (all_x, offset)
    where offset is this replica's first row in all_x. Identity outside a multi-replica run."""
    ctx = _replica_context()
    if ctx is None:
        return x, 0
    # Place x in its replica's rows of a zero tensor and sum over replicas (as the SimCLR tf2
    # code does): the gradient of a SUM all-reduce is again an all-reduce, and unlike
    # `all_gather` this keeps collectives ordered alongside synchronised batch norm (all_gather
    # there failed with "Shape mismatch in the collective instance").
    n = tf.shape(x)[0]
    replica = ctx.replica_id_in_sync_group
    padded = tf.pad(x, [[replica * n, (ctx.num_replicas_in_sync - 1 - replica) * n]] + [[0, 0]] * (x.shape.rank - 1))
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, padded), replica * n


def nt_xent_logits(z_a, z_b, temperature=0.5, cross_replica=True):
    """Logits and labels of NT-Xent: each view against its pair and the 2N-2 other views."""
    z_a = tf.math.l2_normalize(tf.cast(z_a, tf.float32), axis=1)
    z_b = tf.math.l2_normalize(tf.cast(z_b, tf.float32), axis=1)
    if cross_replica:
        all_a, offset = gather_across_replicas(z_a)
        all_b, _ = gather_across_replicas(z_b)
    else:
        all_a, all_b, offset = z_a, z_b, 0
    n = tf.shape(z_a)[0]
    labels = tf.range(n) + offset
    self_mask = tf.one_hot(labels, tf.shape(all_a)[0]) * _LARGE
    logits_ab = tf.matmul(z_a, all_b, transpose_b=True) / temperature
    logits_aa = tf.matmul(z_a, all_a, transpose_b=True) / temperature - self_mask
    logits_ba = tf.matmul(z_b, all_a, transpose_b=True) / temperature
    logits_bb = tf.matmul(z_b, all_b, transpose_b=True) / temperature - self_mask
    logits = tf.concat([tf.concat([logits_ab, logits_aa], 1), tf.concat([logits_ba, logits_bb], 1)], 0)
    return logits, tf.concat([labels, labels], 0)


def nt_xent(z_a, z_b, temperature=0.5, cross_replica=True):
    """NT-Xent (SimCLR, Chen et al. 2020): mean over the 2N views of
    -log exp(cos(z_i, z_j)/t) / sum_{k != i} exp(cos(z_i, z_k)/t), where j is i's pair.

    z_a[i] and z_b[i] are the projections of two views of image i."""
    logits, labels = nt_xent_logits(z_a, z_b, temperature, cross_replica)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def cross_entropy(labels, logits):
    """Mean softmax cross-entropy with integer labels (pretext classification tasks)."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int32), tf.cast(logits, tf.float32)))


def accuracy(labels, logits):
    """Top-1 accuracy of integer labels against logits."""
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(pred, tf.cast(labels, tf.int32)), tf.float32))


__all__ = ["nt_xent", "nt_xent_logits", "gather_across_replicas", "cross_entropy", "accuracy"]
