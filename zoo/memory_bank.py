"""Memory banks and queues of features, shared by the methods that keep features of past
batches: a `MemoryBank` with one row per training example (NPID / non-parametric exemplar, PIRL)
and a FIFO `FeatureQueue` of the most recent keys (MoCo).

Both are Keras layers owning NON-trainable variables, so that
- they are saved and restored with the method's weights (`save_weights` / `load_weights`, the
  trainer's checkpoints): a resumed run continues from exactly the bank it stopped with;
- they are not part of the exported encoder (they belong to the method, not to `encoder`);
- the GradientTape never differentiates through them (non-trainable, and every read is
  wrapped in `stop_gradient`).

Distribution (tf.distribute.MirroredStrategy): the variables are created with
`aggregation="only_first_replica"`. An update made in replica context (inside
`strategy.run`, e.g. in `train_step`) then goes through a `merge_call` that applies the FIRST
replica's value to every copy, so all replicas hold the same bank. To make that value the
right one, `update` / `enqueue` first gather the ids and features of ALL replicas
(`zoo.losses.gather_across_replicas`): every replica computes the same global update, replica
0's copy of it is written everywhere, and the result equals the update a single device makes
for the same global batch. Outside a multi-replica run the gather is the identity.

Ordering: call `update` / `enqueue` AFTER the loss has read the bank (NPID and MoCo compute
the loss against the old entries, then write the new ones); inside one `tf.function`, TF's
automatic control dependencies keep reads and writes of the same variable in program order.
"""
import keras
import tensorflow as tf

from zoo.losses.replicas import gather_across_replicas

DEFAULT_BANK_SIZE = 4096  # rows of a one-row-per-example bank when the data set's size is not given (tests)


def bank_rows(num_examples):
    """Rows of a bank with one row per training example: `num_examples` (the trainer sets it to the
    training-set size), or DEFAULT_BANK_SIZE when it is 0 (not given, e.g. `zoo.create("npid")`)."""
    return num_examples if num_examples > 0 else DEFAULT_BANK_SIZE


def random_unit_rows(shape, seed=0, dtype="float32"):
    """[N, D] rows drawn from a standard normal and L2-normalised: uniform on the unit sphere."""
    x = tf.random.stateless_normal(shape, tf.constant([seed, 0], tf.int64), dtype=tf.float32)
    return tf.cast(tf.math.l2_normalize(x, axis=1), dtype)


def _state(layer, name, shape, initializer, dtype="float32"):
    return layer.add_weight(name=name, shape=shape, initializer=initializer, dtype=dtype, trainable=False,
                            autocast=False, aggregation="only_first_replica")


def _gather_global(x):
    """x of every replica, concatenated in replica order (no gradient)."""
    return gather_across_replicas(tf.stop_gradient(x))[0]


class MemoryBank(keras.layers.Layer):
    """`size` L2-normalised `dim`-d features, one row per training example id.

    Rows start as random unit vectors (deterministic given `seed`). `update(ids, features)`
    sets row i <- normalize(m * row_i + (1 - m) * f_i) for the ids of the GLOBAL batch
    (m = `momentum`; NPID uses 0.5). Ids are taken modulo `size` (a bank smaller than the
    data set, e.g. in tests, then shares rows; the trainer sizes the bank to the data set).
    If an id occurs several times in one global batch, its row is updated once with the mean
    of its features, so the result does not depend on the order of the writes.
    """

    def __init__(self, size, dim, momentum=0.5, seed=0, name="memory_bank", **kwargs):
        super().__init__(name=name, **kwargs)
        self.size, self.dim, self.momentum, self.seed = int(size), int(dim), float(momentum), int(seed)
        self.features = _state(self, "features", (self.size, self.dim),
                               lambda shape, dtype: random_unit_rows(shape, self.seed, dtype))
        self.built = True

    def wrap_ids(self, ids):
        return tf.math.floormod(tf.cast(ids, tf.int32), self.size)

    def sample_ids(self, batch, count, seed):
        """[batch, count] int32 rows drawn uniformly (with replacement) with a stateless `seed`:
        the sampled negatives of NPID and PIRL. Needs no variable, so it runs in tf.data."""
        return tf.random.stateless_uniform([batch, count], seed, 0, self.size, tf.int32)

    def read(self):
        """The whole bank, [size, dim] (a constant for the tape)."""
        return tf.stop_gradient(tf.convert_to_tensor(self.features.value))

    def lookup(self, ids):
        """Rows of `ids` (any integer shape) -> ids.shape + [dim]."""
        return tf.stop_gradient(tf.gather(self.features.value, self.wrap_ids(ids)))

    def call(self, ids):
        return self.lookup(ids)

    def update(self, ids, features):
        """Momentum update of the rows of the global batch's `ids` with `features` [B, dim];
        call it with the LOCAL ids and features, in replica or cross-replica context.
        Returns the assign op (useful for control dependencies)."""
        ids = self.wrap_ids(_gather_global(tf.reshape(ids, [-1])))
        feats = tf.cast(_gather_global(features), tf.float32)
        same = tf.cast(tf.equal(ids[:, None], ids[None, :]), tf.float32)  # [B, B] duplicates
        feats = tf.matmul(same, feats) / tf.reduce_sum(same, axis=1, keepdims=True)
        old = tf.gather(self.features.value, ids)
        new = tf.math.l2_normalize(self.momentum * old + (1.0 - self.momentum) * feats, axis=1)
        return self.features.value.scatter_update(tf.IndexedSlices(new, ids))

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim, "momentum": self.momentum,
                "seed": self.seed}


class FeatureQueue(keras.layers.Layer):
    """A FIFO of the `size` most recent `dim`-d keys (MoCo's dictionary), with a pointer to the
    oldest entry. Starts with random unit vectors (deterministic given `seed`), as MoCo's
    queue does. `enqueue(keys)` overwrites the oldest rows with the GLOBAL batch's keys (the
    keys of replica 0, then replica 1, ...) and advances the pointer, wrapping around."""

    def __init__(self, size, dim, seed=0, name="feature_queue", **kwargs):
        super().__init__(name=name, **kwargs)
        self.size, self.dim, self.seed = int(size), int(dim), int(seed)
        self.keys = _state(self, "keys", (self.size, self.dim),
                           lambda shape, dtype: random_unit_rows(shape, self.seed, dtype))
        self.pointer = _state(self, "pointer", (), "zeros", dtype="int64")
        self.built = True

    def read(self):
        """All `size` keys, [size, dim] (a constant for the tape)."""
        return tf.stop_gradient(tf.convert_to_tensor(self.keys.value))

    def call(self, inputs=None):
        return self.read()

    def enqueue(self, keys):
        """Write the global batch's `keys` [B, dim] (call with the LOCAL keys) at the pointer."""
        keys = tf.cast(_gather_global(keys), tf.float32)
        n = keys.shape[0]
        if n is not None and n > self.size:
            raise ValueError(f"FeatureQueue: a global batch of {n} keys does not fit in a queue of {self.size}.")
        n = tf.shape(keys)[0]
        start = tf.convert_to_tensor(self.pointer.value)
        rows = tf.math.floormod(start + tf.range(tf.cast(n, tf.int64)), self.size)
        write = self.keys.value.scatter_update(tf.IndexedSlices(keys, rows))
        with tf.control_dependencies([write]):
            return self.pointer.value.assign(tf.math.floormod(start + tf.cast(n, tf.int64), self.size))

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim, "seed": self.seed}


__all__ = ["MemoryBank", "FeatureQueue", "random_unit_rows", "bank_rows", "DEFAULT_BANK_SIZE"]
