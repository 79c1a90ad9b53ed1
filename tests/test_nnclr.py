"""NNCLR against independent references: the nearest-neighbour lookup against a numpy argmax of
cosine similarities (and hand-made cases), the loss against a numpy InfoNCE in float64 (the
function on small tensors, and the method's loss with a known support set, computed from its
own networks' outputs), the gradient by central differences, the nearest neighbour as a
constant for the tape, the support set after fit steps (the batch's first-view projections,
in order, after the loss read the old queue), and 2 replicas against one device for the loss
function (the predictions of the global batch are the candidates)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.distribute import distribute_views
from zoo.losses import nearest_neighbours, nnclr_loss
from zoo.optimizers import make_optimizer
from numerics import central_differences

TINY = dict(backbone="resnet18", width=0.125, image_size=32, projection_hidden_dim=64, projection_dim=16,
            prediction_hidden_dim=32, queue_size=24)
BATCH = 8


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_nearest(z, support):
    """Index of the most cosine-similar support row, one query at a time."""
    s = _normalize(support)
    return np.array([int(np.argmax([float(_normalize(q) @ row) for row in s])) for q in z])


def _np_nnclr(nn, p, t):
    """Mean over i of -log softmax_k(cos(nn_i, p_k) / t)[i], float64."""
    logits = _normalize(nn) @ _normalize(p).T / t
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(lse - np.diag(logits)))


# ---- the functions --------------------------------------------------------------------------

def test_nearest_neighbours_hand_made_and_against_numpy(rng):
    support = np.eye(4, dtype=np.float32) * np.array([[1.0], [5.0], [0.1], [2.0]], np.float32)  # lengths differ
    z = np.array([[0.9, 0.1, 0, 0], [0, 0.2, 0.1, 1.0], [0.1, 0.1, 3.0, 0]], np.float32)
    rows, indices = nearest_neighbours(z, support)
    # cosine, not dot product: row 2 (length 0.1) is the third query's neighbour despite row 1's length 5
    np.testing.assert_array_equal(indices.numpy(), [0, 3, 2])
    np.testing.assert_array_equal(rows.numpy(), support[[0, 3, 2]])  # the stored rows, as they are
    z = rng.normal(size=(9, 5)).astype(np.float32)
    support = rng.normal(size=(30, 5)).astype(np.float32)
    expected = _np_nearest(z, support)
    assert len(set(expected)) > 3
    rows, indices = nearest_neighbours(z, support)
    np.testing.assert_array_equal(indices.numpy(), expected)
    np.testing.assert_array_equal(rows.numpy(), support[expected])


def test_nearest_neighbours_are_constants_for_the_tape(rng):
    z = tf.constant(rng.normal(size=(4, 3)).astype(np.float32))
    support = tf.constant(rng.normal(size=(6, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch([z, support])
        rows, _ = nearest_neighbours(z, support)
        total = tf.reduce_sum(rows)
    assert tape.gradient(total, [z, support]) == [None, None]


@pytest.mark.parametrize("n, d, t", [(1, 3, 0.1), (6, 4, 0.1), (12, 8, 0.2), (5, 16, 1.0)])
def test_nnclr_loss_matches_numpy(rng, n, d, t):
    nn = rng.normal(size=(n, d)).astype(np.float32)
    p = rng.normal(size=(n, d)).astype(np.float32)
    np.testing.assert_allclose(float(nnclr_loss(nn, p, t)), _np_nnclr(nn, p, t), rtol=1e-5, atol=1e-6)
    # the anchor is nn, the candidates the predictions: swapping the roles changes the loss
    if n > 1:
        assert abs(float(nnclr_loss(p, nn, t)) - _np_nnclr(nn, p, t)) > 1e-4
    # a prediction equal to its neighbour, orthogonal to the others: -log e^(1/t) / (e^(1/t) + n - 1)
    eye = np.eye(n, d).astype(np.float32)
    if n <= d:
        np.testing.assert_allclose(float(nnclr_loss(eye, 3 * eye, t)), np.log1p((n - 1) * np.exp(-1 / t)),
                                   rtol=1e-5, atol=1e-6)


def test_nnclr_loss_gradient_matches_central_differences(rng):
    nn = rng.normal(size=(5, 4)).astype(np.float32)
    p = rng.normal(size=(5, 4)).astype(np.float32)
    x = tf.constant(p)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = nnclr_loss(nn, x, 0.2)
    numeric = central_differences(lambda v: _np_nnclr(nn, v, 0.2), p)
    assert np.abs(numeric).max() > 0.1
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), numeric, rtol=1e-3, atol=1e-5)


def test_two_replicas_compute_the_loss_and_gradient_of_one_device(rng, two_device_strategy):
    strategy = two_device_strategy
    nn = rng.normal(size=(BATCH, 6)).astype(np.float32)
    p = rng.normal(size=(BATCH, 6)).astype(np.float32)
    x = tf.constant(p)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = nnclr_loss(nn, x, 0.2)
    grad = tape.gradient(loss, x).numpy()
    assert float(loss) == pytest.approx(_np_nnclr(nn, p, 0.2), rel=1e-5)
    # each replica with only its own 4 candidates would give another loss
    local_only = np.mean([_np_nnclr(nn[:4], p[:4], 0.2), _np_nnclr(nn[4:], p[4:], 0.2)])
    assert abs(local_only - float(loss)) > 1e-2

    @tf.function
    def step(v):
        def replica_fn(v):
            with tf.GradientTape() as tape:
                tape.watch(v["p"])
                scaled = nnclr_loss(v["nn"], v["p"], 0.2) / strategy.num_replicas_in_sync
            return scaled, tape.gradient(scaled, v["p"])
        return strategy.run(replica_fn, (v,))

    scaled, grads = step(distribute_views(strategy, {"nn": tf.constant(nn), "p": x}))
    local = strategy.experimental_local_results
    assert sum(float(s) for s in local(scaled)) == pytest.approx(float(loss), rel=1e-5)
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in local(grads)]), grad, atol=1e-6)


# ---- the method -----------------------------------------------------------------------------

def _nnclr(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("nnclr", **{**TINY, **overrides})


def _views(method, seed=(1, 2), start=0):
    images = zoo.data.load_arrays("shapes", "train").images[start:start + BATCH]
    return method.make_views(tf.constant(images), tf.constant(np.arange(BATCH)), tf.constant(seed))


def _known_queue(method, seed=0):
    queue = _normalize(np.random.default_rng(seed).normal(size=(method.config.queue_size, method.config.projection_dim)))
    method.queue.keys.assign(queue.astype(np.float32))
    return method.queue.keys.numpy().astype(np.float64)


def _fit_one(method, views):
    return method.fit(tf.data.Dataset.from_tensors(views), epochs=1, verbose=0).history


def test_heads_have_the_papers_shape():
    method = _nnclr()
    dense = lambda m: [layer.units for layer in m.layers if isinstance(layer, keras.layers.Dense)]  # noqa: E731
    bn = lambda m: sum(isinstance(layer, keras.layers.BatchNormalization) for layer in m.layers)  # noqa: E731
    assert dense(method.projector) == [64, 64, 16] and bn(method.projector) == 3  # BN after every layer
    assert dense(method.predictor) == [32, 16] and bn(method.predictor) == 1
    assert method.queue.keys.shape == (24, 16) and not method.queue.keys.trainable


def test_loss_uses_the_nearest_neighbours_in_the_support_set_and_the_step_reads_the_old_queue():
    method = _nnclr(temperature=0.2)
    queue = _known_queue(method)
    views = _views(method)
    z_a, p_a = (x.numpy() for x in method.project(views["view_a"], training=True))
    z_b, p_b = (x.numpy() for x in method.project(views["view_b"], training=True))
    nn_a, nn_b = queue[_np_nearest(z_a, queue)], queue[_np_nearest(z_b, queue)]
    expected = 0.5 * (_np_nnclr(nn_a, p_b, 0.2) + _np_nnclr(nn_b, p_a, 0.2))
    loss, _ = method.pretext_loss(views, training=True)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # with the views' own projections as positives (SimCLR-like), the loss would differ
    assert abs(0.5 * (_np_nnclr(z_a, p_b, 0.2) + _np_nnclr(z_b, p_a, 0.2)) - expected) > 1e-3
    # no gradient reaches the support set
    with tf.GradientTape() as tape:
        loss, _ = method.pretext_loss(views, training=True)
    assert tape.gradient(loss, method.queue.keys) is None
    method.compile(optimizer=make_optimizer("sgd", 0.05, momentum=0.9))
    history = _fit_one(method, views)
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)  # the loss read the queue before the update


def test_support_set_holds_each_steps_first_view_projections_in_order_and_wraps_around():
    method = _nnclr()
    method.compile(optimizer=make_optimizer("sgd", 0.05, momentum=0.9))
    fifo, pointer, size = _known_queue(method), 0, method.config.queue_size
    for step in range(4):  # 32 rows into a queue of 24: wraps around once
        views = _views(method, seed=(5, step), start=BATCH * step)
        z_a, _ = method.project(views["view_a"], training=True)  # the weights BEFORE this step's update
        _fit_one(method, views)
        for row in _normalize(z_a.numpy()):
            fifo[pointer] = row
            pointer = (pointer + 1) % size
        np.testing.assert_allclose(method.queue.keys.numpy(), fifo, atol=1e-5, err_msg=f"step {step}")
        assert int(method.queue.pointer.numpy()) == pointer
    assert pointer == (4 * BATCH) % size
