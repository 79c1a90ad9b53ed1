"""MoCo v1/v2 against independent references: the key encoder's momentum update against numpy
after a fit step, the queue's contents after several steps (order, wrap-around), the loss
against a numpy InfoNCE with a known queue (and the step's loss read the OLD queue), the key
encoder gets no gradient and is not trainable, a checkpoint restores key encoder and queue
exactly, and the batch-norm defence: shuffle-BN keys equal keys computed BN batch by BN
batch, 2 replicas with shuffle-BN equal 1 device with 2 BN splits, and with sync_bn the key
encoder normalises over the global batch."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import momentum
from zoo.distribute import distribute_views
from zoo.methods.moco import interleave
from zoo.optimizers import make_optimizer

TINY = dict(backbone="resnet18", width=0.125, image_size=32)
BATCH = 8


def _moco(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("moco", **{**TINY, **overrides})


def _images(n=BATCH, start=0):
    return zoo.data.load_arrays("shapes", "train").images[start:start + n]


def _views(method, seed=(1, 2), start=0):
    return method.make_views(tf.constant(_images(start=start)), tf.constant(np.arange(BATCH)), tf.constant(seed))


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _keys_ref(method, x):
    """Keys straight from the key networks (one BN batch), normalised in numpy."""
    return _normalize(method.key_projector(method.key_encoder(x, training=True), training=True).numpy())


def _queries_ref(method, x):
    return _normalize(method.projector(method.encoder(x, training=True), training=True).numpy())


def _infonce(q, k, queue, t):
    """Mean over queries of -log softmax([q.k, q.queue_1..K] / t)[0], in float64."""
    logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.T], axis=1) / t
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(lse - logits[:, 0]))


def _sgd():
    return make_optimizer("sgd", 0.05, momentum=0.9)


def _fit_one(method, views):
    return method.fit(tf.data.Dataset.from_tensors(views), epochs=1, verbose=0).history


def _key_vars(method):
    return method.key_encoder.weights + method.key_projector.weights


def _perturb_keys(method, scale=0.1, seed=0):
    """Move the key encoder away from the query encoder (at initialisation q = k, and the loss
    is ~0 against a random queue)."""
    rng = np.random.default_rng(seed)
    targets, _ = momentum.momentum_pairs([method.key_encoder, method.key_projector], [method.encoder, method.projector])
    for t in targets:
        t.assign(t.numpy() + scale * rng.normal(size=t.shape).astype(np.float32))
    return targets


def test_key_encoder_starts_equal_is_not_trainable_and_gets_no_gradient():
    method = _moco()
    for k, q in zip(_key_vars(method), method.encoder.weights + method.projector.weights):
        np.testing.assert_array_equal(k.numpy(), q.numpy())
    key_ids = {id(v) for v in _key_vars(method)}
    trainable = {id(v) for v in method.trainable_variables}
    assert not key_ids & trainable
    assert key_ids <= {id(v) for v in method.non_trainable_variables}
    expected = {id(v) for v in method.encoder.trainable_variables + method.projector.trainable_variables}
    assert trainable == expected
    # the exported encoder is the query encoder, without any key or queue weight
    assert not key_ids & {id(v) for v in method.encoder.weights}
    views = _views(method)
    with tf.GradientTape() as tape:
        loss, _ = method.pretext_loss(views, training=True)
    grads = tape.gradient(loss, _key_vars(method) + method.queue.weights)
    assert all(g is None for g in grads)
    # its layers stay trainable, so its batch norm uses batch statistics in training mode
    assert not np.allclose(method.embed_keys(views["key"], training=True).numpy(),
                           method.embed_keys(views["key"], training=False).numpy(), atol=1e-3)


def test_momentum_update_after_a_fit_step_matches_numpy():
    m = 0.9
    method = _moco(key_momentum=m)
    targets, onlines = momentum.momentum_pairs([method.key_encoder, method.key_projector],
                                               [method.encoder, method.projector])
    assert len(targets) == len(method.trainable_variables)
    _perturb_keys(method)
    old_key = [t.numpy() for t in targets]
    old_query = [o.numpy() for o in onlines]
    method.compile(optimizer=_sgd())
    _fit_one(method, _views(method))
    moved = 0
    for t, o, k0, q0 in zip(targets, onlines, old_key, old_query):
        q1 = o.numpy()
        np.testing.assert_allclose(t.numpy(), m * k0 + (1 - m) * q1, rtol=1e-5, atol=1e-6, err_msg=t.path)
        if np.abs(q1 - q0).max() > 1e-4:  # the NEW query weights were used, not the old ones
            moved += 1
            assert not np.allclose(t.numpy(), m * k0 + (1 - m) * q0, rtol=1e-5, atol=1e-6), t.path
    assert moved > len(targets) // 2


def test_loss_is_infonce_against_the_queue_and_the_step_reads_the_old_queue():
    for version, t in ((1, 0.07), (2, 0.2)):
        method = _moco(version=version, queue_size=16)
        assert method.temperature == t
        assert len(method.projector.layers) == (2 if version == 1 else 4)  # input + linear / MLP
        rng = np.random.default_rng(version)
        queue = _normalize(rng.normal(size=(16, 128))).astype(np.float32)
        method.queue.keys.assign(queue)
        _perturb_keys(method, 0.3)
        views = _views(method)
        for x in views.values():
            assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
        q, k = _queries_ref(method, views["query"]), _keys_ref(method, views["key"])
        expected = _infonce(q, k, queue, t)
        assert expected > 0.1
        loss, metrics = method.pretext_loss(views, training=True)
        assert float(loss) == pytest.approx(expected, rel=1e-5)
        # the current batch's other keys are no negatives: including them changes the loss
        with_batch = np.concatenate([queue, k[1:]])
        assert abs(_infonce(q, k, with_batch, t) - expected) > 1e-3
        method.compile(optimizer=_sgd())
        history = _fit_one(method, views)
        assert history["loss"][0] == pytest.approx(expected, rel=1e-5)
        new = method.queue.keys.numpy()
        np.testing.assert_allclose(new[:BATCH], k, atol=1e-5)  # this step's keys, enqueued after the loss
        np.testing.assert_array_equal(new[BATCH:], queue[BATCH:])
        assert int(method.queue.pointer.numpy()) == BATCH


def test_queue_holds_every_steps_keys_in_order_and_wraps_around():
    size = 20
    method = _moco(queue_size=size)
    method.compile(optimizer=_sgd())
    fifo, pointer = method.queue.keys.numpy().astype(np.float64), 0
    for step in range(4):  # 32 keys into 20 rows: wraps around once
        views = _views(method, seed=(7, step), start=BATCH * step)
        keys = _keys_ref(method, views["key"])  # the key encoder BEFORE this step's momentum update
        _fit_one(method, views)
        for row in keys:
            fifo[pointer] = row
            pointer = (pointer + 1) % size
        np.testing.assert_allclose(method.queue.keys.numpy(), fifo, atol=1e-5, err_msg=f"step {step}")
        assert int(method.queue.pointer.numpy()) == pointer
    assert pointer == (4 * BATCH) % size


def test_momentum_waits_for_the_optimizer_under_gradient_accumulation():
    method = _moco(key_momentum=0.5)
    method.compile(optimizer=make_optimizer("sgd", 0.05, momentum=0.9, accumulate_steps=2))
    targets, _ = momentum.momentum_pairs([method.key_encoder, method.key_projector],
                                         [method.encoder, method.projector])
    before = [t.numpy() for t in targets]
    _fit_one(method, _views(method))  # batch 1 of 2: gradients accumulated, weights unchanged
    for t, b in zip(targets, before):
        np.testing.assert_array_equal(t.numpy(), b)
    assert int(method.queue.pointer.numpy()) == BATCH  # keys are enqueued on every batch
    _fit_one(method, _views(method, seed=(2, 3)))  # batch 2: the update, then the momentum step
    assert sum(not np.array_equal(t.numpy(), b) for t, b in zip(targets, before)) > len(targets) // 2


def test_checkpoint_restores_key_encoder_and_queue_exactly(tmp_path):
    method = _moco(key_momentum=0.9)
    method.compile(optimizer=_sgd(), run_eagerly=True)  # the checkpoint is the point, not the trace
    views = _views(method)
    method.fit(tf.data.Dataset.from_tensors(views).repeat(2), epochs=1, verbose=0)
    method.save_weights(tmp_path / "moco.weights.h5")
    keras.utils.set_random_seed(42)
    restored = zoo.create("moco", **TINY, key_momentum=0.9, queue_seed=3)
    assert not np.allclose(restored.queue.keys.numpy(), method.queue.keys.numpy())
    restored.load_weights(tmp_path / "moco.weights.h5")
    for a, b in zip(_key_vars(restored), _key_vars(method)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(restored.queue.keys.numpy(), method.queue.keys.numpy())
    assert int(restored.queue.pointer.numpy()) == int(method.queue.pointer.numpy()) == 2 * BATCH
    # the key encoder really differs from the query encoder after training (so it was saved on its own)
    assert not np.allclose(restored.key_encoder.weights[0].numpy(), restored.encoder.weights[0].numpy())
    assert float(restored.pretext_loss(views)[0]) == pytest.approx(float(method.pretext_loss(views)[0]), rel=1e-6)


# --- batch-norm leakage: shuffle-BN and sync BN ----------------------------------------------

def test_interleave_is_a_permutation_whose_key_batches_mix_every_query_batch():
    perm, inverse = (x.numpy() for x in interleave(24, 4))  # 4 BN batches of 6
    assert sorted(perm) == list(range(24))
    np.testing.assert_array_equal(perm[inverse], np.arange(24))
    for group in range(4):  # key BN batch `group` takes 6 / 4 -> 1 or 2 examples of each query batch
        owners = perm[6 * group:6 * group + 6] // 6
        assert set(owners) == {0, 1, 2, 3}


def test_shuffle_bn_on_one_device_computes_every_key_in_another_bn_batch():
    method = _moco(bn_splits=2)
    views = _views(method)
    x = views["key"]
    keys = method.embed_keys(x, training=True).numpy()
    slots = np.array([0, 4, 1, 5, 2, 6, 3, 7])  # key BN batches {0, 4, 1, 5} and {2, 6, 3, 7}
    ref = np.empty_like(keys)
    ref[slots[:4]] = _keys_ref(method, tf.gather(x, slots[:4]))
    ref[slots[4:]] = _keys_ref(method, tf.gather(x, slots[4:]))
    np.testing.assert_allclose(keys, ref, atol=1e-5)
    # not the keys of one BN batch, nor of the query's own BN batches {0..3}, {4..7}
    assert not np.allclose(keys, _keys_ref(method, x), atol=1e-3)
    unshuffled = np.concatenate([_keys_ref(method, x[:4]), _keys_ref(method, x[4:])])
    assert not np.allclose(keys, unshuffled, atol=1e-3)
    queries = method.embed_queries(views["query"], training=True).numpy()
    np.testing.assert_allclose(queries, np.concatenate([_queries_ref(method, views["query"][:4]),
                                                        _queries_ref(method, views["query"][4:])]), atol=1e-5)
    # evaluation: moving statistics, no splits, no shuffle
    np.testing.assert_allclose(method.embed_keys(x, training=False).numpy(),
                               _normalize(method.key_projector(method.key_encoder(x)).numpy()), atol=1e-5)


def test_two_replicas_shuffle_bn_across_replicas_and_sync_bn_normalises_over_the_global_batch(two_device_strategy):
    strategy = two_device_strategy
    views = None
    for sync_bn in (False, True):
        # one device: per-replica BN emulated by 2 BN splits (shuffle-BN), or one global BN batch
        single = _moco(sync_bn=sync_bn, bn_splits=1 if sync_bn else 2, queue_size=32)
        views = views if views is not None else _views(single)
        keys = single.embed_keys(views["key"], training=True).numpy()
        loss, _ = single.pretext_loss(views, training=True)
        with strategy.scope():
            mirrored = _moco(sync_bn=sync_bn, queue_size=32)
        mirrored.set_weights(single.get_weights())
        dist_views = distribute_views(strategy, views)

        @tf.function
        def step(v):
            def replica_fn(v):
                local, _ = mirrored.pretext_loss(v, training=True)
                return local, mirrored.embed_keys(v["key"], training=True)
            local, k = strategy.run(replica_fn, (v,))
            return strategy.reduce("MEAN", local, axis=None), strategy.experimental_local_results(k)

        dist_loss, dist_keys = step(dist_views)
        dist_keys = np.concatenate([k.numpy() for k in dist_keys])
        np.testing.assert_allclose(dist_keys, keys, atol=2e-5, err_msg=f"sync_bn={sync_bn}")
        assert float(dist_loss) == pytest.approx(float(loss), rel=1e-5)
        if sync_bn:  # the global batch is one BN batch
            np.testing.assert_allclose(dist_keys, _keys_ref(single, views["key"]), atol=2e-5)
        else:  # each replica's keys come from a BN batch of other images than its own
            own = np.concatenate([_keys_ref(single, views["key"][:4]), _keys_ref(single, views["key"][4:])])
            assert not np.allclose(dist_keys, own, atol=1e-3)


@pytest.mark.slow
def test_fit_with_jit_compile_and_shuffle_bn_splits():
    method = _moco(bn_splits=2)
    method.compile(optimizer=_sgd(), jit_compile=True)
    history = method.fit(tf.data.Dataset.from_tensors(_views(method)).repeat(2), epochs=1, verbose=0)
    assert method.jit_compile is True and np.isfinite(history.history["loss"][-1])
    assert int(method.queue.pointer.numpy()) == 2 * BATCH
