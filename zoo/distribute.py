"""What the trainer needs to know about a tf.distribute strategy beyond `num_replicas_in_sync`:
whether it spans several worker processes, which worker this is, and whether every replica
holds the same values (one all-reduce, exact)."""
import tensorflow as tf


def is_multi_worker(strategy=None):
    """True under MultiWorkerMirroredStrategy with more than one worker (Keras's own test for
    its multi-worker code paths)."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def worker_index(strategy=None):
    """This process's worker index in a multi-worker run (TF_CONFIG's task index), else 0."""
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return 0
    # With an explicit "chief" task, "worker" 0 is the second process.
    return resolver.task_id + int("chief" in resolver.cluster_spec().as_dict())


def num_workers(strategy=None):
    """The number of worker processes of the run (1 outside multi-worker runs)."""
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(spec.get("worker", [])) + len(spec.get("chief", []))


def is_chief(strategy=None):
    """True on the process that writes the run folder (the only one outside multi-worker runs)."""
    return worker_index(strategy) == 0


def _replica_zero_values(ctx, values):
    """Replica 0's `values` on every replica: a SUM all-reduce to which the others add zeros (exact)."""
    first = tf.equal(ctx.replica_id_in_sync_group, 0)
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.where(first, v, tf.zeros_like(v)) for v in values])


def replica_disagreement(strategy, values_fn):
    """Sum over replicas (over every worker) of max |x - x on replica 0|, over the tensors
    that `values_fn()` returns when called on each replica (read variables there to get that
    replica's copy): 0.0 exactly when every replica holds bit-identical values. Replica 0's
    values reach the others by a SUM all-reduce to which the others add zeros, so the
    comparison is exact."""
    def replica_fn():
        ctx = tf.distribute.get_replica_context()
        values = [tf.cast(v, tf.float32) for v in values_fn()]
        reference = _replica_zero_values(ctx, values)
        local = tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(v - r)) for v, r in zip(values, reference)]))
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)

    result = tf.function(lambda: strategy.run(replica_fn))()
    return float(strategy.experimental_local_results(result)[0])


def broadcast_from_chief(array, strategy=None):
    """A numpy `array` computed on every worker of a multi-worker run (DeepCluster's k-means), replaced
    by the chief's: replica 0's value reaches the others by a SUM all-reduce to which they add zeros
    (float32, exact; integer arrays must stay below 2**24). Unchanged outside multi-worker runs."""
    import numpy as np
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return array
    array = np.asarray(array)
    if array.dtype.kind in "iu" and array.size and np.abs(array).max() >= 2 ** 24:
        raise ValueError("broadcast_from_chief: integers of 2**24 or more are not exact in float32.")

    def replica_fn():
        return _replica_zero_values(tf.distribute.get_replica_context(), [tf.constant(array, tf.float32)])[0]

    result = tf.function(lambda: strategy.run(replica_fn))()
    return strategy.experimental_local_results(result)[0].numpy().astype(array.dtype)


def distribute_views(strategy, views):
    """A dict of global-batch tensors split in order into equal per-replica shards (replica r
    gets rows r*n .. (r+1)*n - 1): the layout `fit` gives a batch under `strategy`, for driving
    `strategy.run` by hand (equivalence tests and benchmarks)."""
    def shard(ctx):
        replica, replicas = ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync
        out = {}
        for key, value in views.items():
            n = value.shape[0] // replicas
            out[key] = value[replica * n:(replica + 1) * n]
        return out
    return strategy.experimental_distribute_values_from_function(shard)


def global_loss_and_gradients(strategy, method, views):
    """One training-mode forward/backward pass of `method.pretext_loss` under `strategy` on
    the global batch `views` (a dict of tensors): (global loss, gradients summed over replicas),
    each replica's loss scaled by 1 / replicas as `train_step` does. Comparable with the loss
    and gradients of the same batch on one device."""
    @tf.function
    def step(v):
        def replica_fn(v):
            with tf.GradientTape() as tape:
                scaled = method.pretext_loss(v, training=True)[0] / strategy.num_replicas_in_sync
            return scaled, tape.gradient(scaled, method.trainable_variables)
        scaled, grads = strategy.run(replica_fn, (v,))
        return (strategy.reduce("SUM", scaled, axis=None),
                [strategy.reduce("SUM", g, axis=None) for g in grads])

    return step(distribute_views(strategy, views))


class AnyReplica:
    """`AnyReplica(strategy)(flag)`: True when `flag` is True on any replica (any worker); an
    all-reduce, so every worker must call it at the same point (e.g. after the same step)."""

    def __init__(self, strategy):
        self.strategy = strategy

        @tf.function
        def reduce(flag):
            total = strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, tf.identity(flag)))
            return strategy.experimental_local_results(total)[0]

        self._reduce = reduce

    def __call__(self, flag):
        return float(self._reduce(tf.constant(1.0 if flag else 0.0))) > 0


__all__ = ["is_multi_worker", "worker_index", "num_workers", "is_chief", "replica_disagreement", "distribute_views",
           "global_loss_and_gradients", "AnyReplica"]
