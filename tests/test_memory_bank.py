"""zoo.memory_bank against numpy references: momentum update of a per-example bank, FIFO queue
with wrap-around, the same update under a 2-replica MirroredStrategy, checkpoint round trip,
and NPID's use of it in a fit step (loss on the old bank, update after)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.memory_bank import FeatureQueue, MemoryBank


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _bank_update(bank, ids, feats, m):
    """Reference: rows of `ids` <- normalize(m * row + (1 - m) * mean of that id's features)."""
    out = bank.copy()
    for i in np.unique(ids):
        f = feats[ids == i].mean(axis=0)
        out[i] = _normalize(m * bank[i] + (1 - m) * f)
    return out


class _FIFO:
    def __init__(self, keys):
        self.keys, self.ptr = keys.copy(), 0

    def enqueue(self, batch):
        for row in batch:
            self.keys[self.ptr] = row
            self.ptr = (self.ptr + 1) % len(self.keys)


def test_bank_starts_as_seeded_unit_vectors():
    a, b, c = MemoryBank(50, 8, seed=3), MemoryBank(50, 8, seed=3), MemoryBank(50, 8, seed=4)
    np.testing.assert_allclose(np.linalg.norm(a.features.numpy(), axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(a.features.numpy(), b.features.numpy())
    assert not np.allclose(a.features.numpy(), c.features.numpy())
    assert not a.trainable_weights and len(a.non_trainable_weights) == 1


def test_momentum_update_matches_numpy_and_leaves_other_rows(rng):
    bank = MemoryBank(10, 4, momentum=0.5, seed=0)
    before = bank.features.numpy()
    ids = np.array([2, 5, 7], np.int32)
    feats = _unit(rng, 3, 4)
    bank.update(tf.constant(ids), tf.constant(feats))
    after = bank.features.numpy()
    np.testing.assert_allclose(after, _bank_update(before, ids, feats, 0.5), atol=1e-6)
    untouched = np.setdiff1d(np.arange(10), ids)
    np.testing.assert_array_equal(after[untouched], before[untouched])
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(bank.lookup(tf.constant([5, 2])).numpy(), after[[5, 2]], atol=0)


def test_update_with_other_momentum_duplicates_and_wrapped_ids(rng):
    bank = MemoryBank(10, 4, momentum=0.8, seed=1)
    before = bank.features.numpy()
    ids = np.array([3, 13, 4], np.int32)  # 13 is row 3 again (ids are taken modulo the size)
    feats = _unit(rng, 3, 4)
    bank.update(tf.constant(ids), tf.constant(feats))
    np.testing.assert_allclose(bank.features.numpy(), _bank_update(before, ids % 10, feats, 0.8), atol=1e-6)


def test_queue_matches_a_numpy_fifo_with_wrap_around(rng):
    queue = FeatureQueue(7, 3, seed=0)
    ref = _FIFO(queue.keys.numpy())
    np.testing.assert_allclose(np.linalg.norm(ref.keys, axis=1), 1.0, atol=1e-6)
    for n in (3, 3, 2, 4, 1):  # passes the end twice
        batch = _unit(rng, n, 3)
        queue.enqueue(tf.constant(batch))
        ref.enqueue(batch)
        np.testing.assert_array_equal(queue.keys.numpy(), ref.keys)
        assert int(queue.pointer.numpy()) == ref.ptr
    assert ref.ptr == (3 + 3 + 2 + 4 + 1) % 7
    with pytest.raises(ValueError, match="does not fit"):
        queue.enqueue(tf.constant(_unit(rng, 8, 3)))


def test_update_under_two_replicas_equals_the_one_device_update(two_device_strategy, rng):
    strategy = two_device_strategy
    ids = np.array([1, 6, 9, 4, 2, 11], np.int32)  # replica 0: 1, 6, 9; replica 1: 4, 2, 11
    feats = _unit(rng, 6, 5)
    single_bank, single_queue = MemoryBank(12, 5, momentum=0.5, seed=2), FeatureQueue(8, 5, seed=5)
    single_bank.update(tf.constant(ids), tf.constant(feats))
    single_queue.enqueue(tf.constant(feats))
    single_queue.enqueue(tf.constant(feats))  # 12 keys into 8 rows: wraps around
    with strategy.scope():
        bank, queue = MemoryBank(12, 5, momentum=0.5, seed=2), FeatureQueue(8, 5, seed=5)

    def shard(ctx):
        r = ctx.replica_id_in_sync_group
        return tf.constant(ids[3 * r:3 * r + 3]), tf.constant(feats[3 * r:3 * r + 3])

    @tf.function
    def step(values):
        def replica_fn(i, f):
            bank.update(i, f)
            queue.enqueue(f)
            queue.enqueue(f)
        strategy.run(replica_fn, values)

    step(strategy.experimental_distribute_values_from_function(shard))
    # every replica's copy holds the one-device result
    for copy in strategy.experimental_local_results(bank.features.value):
        np.testing.assert_allclose(copy.numpy(), single_bank.features.numpy(), atol=1e-6)
    for copy in strategy.experimental_local_results(queue.keys.value):
        np.testing.assert_allclose(copy.numpy(), single_queue.keys.numpy(), atol=0)
    assert [int(p.numpy()) for p in strategy.experimental_local_results(queue.pointer.value)] == [4, 4]
    # and the rows of both replicas' ids moved
    assert not np.allclose(single_bank.features.numpy()[ids], MemoryBank(12, 5, seed=2).features.numpy()[ids])


class _Holder(keras.Model):
    def __init__(self, seed):
        super().__init__()
        self.bank = MemoryBank(9, 3, seed=seed)
        self.queue = FeatureQueue(4, 3, seed=seed)
        self.built = True


def test_state_survives_save_and_load_weights(tmp_path, rng):
    model = _Holder(seed=0)
    model.bank.update(tf.constant([1, 4]), tf.constant(_unit(rng, 2, 3)))
    model.queue.enqueue(tf.constant(_unit(rng, 3, 3)))
    model.save_weights(tmp_path / "h.weights.h5")
    restored = _Holder(seed=1)
    assert not np.allclose(restored.bank.features.numpy(), model.bank.features.numpy())
    restored.load_weights(tmp_path / "h.weights.h5")
    np.testing.assert_array_equal(restored.bank.features.numpy(), model.bank.features.numpy())
    np.testing.assert_array_equal(restored.queue.keys.numpy(), model.queue.keys.numpy())
    assert int(restored.queue.pointer.numpy()) == 3
    # resuming continues exactly: the next enqueue lands at the restored pointer in both
    batch = _unit(rng, 2, 3)
    model.queue.enqueue(tf.constant(batch))
    restored.queue.enqueue(tf.constant(batch))
    np.testing.assert_array_equal(restored.queue.keys.numpy(), model.queue.keys.numpy())


def test_npid_step_uses_the_old_bank_then_updates_the_batch_rows(tmp_path):
    keras.utils.set_random_seed(0)
    method = zoo.create("npid", backbone="resnet18", width=0.125, image_size=32, num_examples=16)
    assert method.bank_size == 16
    bank_paths = {w.path for w in method.memory_bank.weights}
    assert bank_paths <= {w.path for w in method.non_trainable_weights}
    assert not bank_paths & {w.path for w in method.encoder.weights}  # not exported with the encoder
    method.compile(optimizer=keras.optimizers.SGD(0.1))
    images = zoo.data.load_arrays("shapes", "train").images[:8]
    views = method.make_views(tf.constant(images), tf.constant(np.arange(3, 11), tf.int32), tf.constant([1, 2]))
    old = method.memory_bank.features.numpy()
    loss_on_old_bank, _ = method.pretext_loss(views, training=True)
    v = method.embed(views["images"], training=True).numpy()
    history = method.fit(tf.data.Dataset.from_tensors(views), epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(float(loss_on_old_bank), rel=1e-5)
    new = method.memory_bank.features.numpy()
    np.testing.assert_allclose(new, _bank_update(old, np.arange(3, 11), v, 0.5), atol=1e-5)
    # the evaluation step does not touch the bank
    method.evaluate(tf.data.Dataset.from_tensors(views), verbose=0)
    np.testing.assert_array_equal(method.memory_bank.features.numpy(), new)
    # checkpoints carry the bank
    method.save_weights(tmp_path / "npid.weights.h5")
    keras.utils.set_random_seed(5)
    restored = zoo.create("npid", backbone="resnet18", width=0.125, image_size=32, num_examples=16, bank_seed=7)
    restored.load_weights(tmp_path / "npid.weights.h5")
    np.testing.assert_array_equal(restored.memory_bank.features.numpy(), new)
