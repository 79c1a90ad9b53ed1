"""Collective helpers shared by the losses: the replica context of a multi-replica step and a
differentiable gather of every replica's rows (kept apart from zoo/losses/__init__.py so that the
loss modules import them without importing their own package)."""
import tensorflow as tf


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

