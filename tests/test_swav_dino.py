"""SwAV and DINO (zoo.losses.clustering, zoo/methods/swav.py, zoo/methods/dino.py) against
independent references: Sinkhorn-Knopp against a float64 numpy loop written from the paper
(same iterations) and its marginals, 2 replicas against one device for the same global batch;
swav_loss and dino_loss against numpy loops over the crop pairs, their gradients by central
differences; DINO's centre (numpy, and the global-batch mean on 2 replicas), the teacher
temperature schedule, the teacher's EMA against numpy after a fit step and its missing
gradient; SwAV's prototypes unit columns after a step, frozen during the freeze window; the
queue's contents and the codes computed with it."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import momentum
from zoo.distribute import distribute_views
from zoo.losses import dino_batch_center, dino_loss, sinkhorn, swav_loss
from zoo.methods.dino import teacher_temperature
from zoo.optimizers import make_optimizer
from numerics import central_differences

TINY = dict(backbone="resnet18", width=0.125, image_size=32)
BATCH = 8


# ---- numpy references ----

def np_sinkhorn(scores, epsilon, iterations):
    """Algorithm of SwAV's code (distributed_sinkhorn), one device, float64: Q = exp(S/eps)^T
    [K, B], Q /= sum; repeat: rows /= row sums, /= K; columns /= column sums, /= B; return (Q B)^T."""
    q = np.exp(np.asarray(scores, np.float64) / epsilon).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def np_pair_loss(targets, log_probs):
    """Mean over (a, v), v != a, of the batch mean of -sum_k targets[a] log_probs[v]."""
    total, pairs = 0.0, 0
    for a in range(len(targets)):
        for v in range(len(log_probs)):
            if v == a:
                continue
            total += np.mean(-np.sum(targets[a] * log_probs[v], axis=-1))
            pairs += 1
    return total / pairs


def np_swav_loss(scores, codes, t):
    return np_pair_loss(np.asarray(codes, np.float64), np_log_softmax(np.asarray(scores) / t))


def np_dino_loss(student, teacher, center, ts, tt):
    logits = (np.asarray(teacher, np.float64) - center) / tt
    targets = np.exp(np_log_softmax(logits))
    return np_pair_loss(targets, np_log_softmax(np.asarray(student, np.float64) / ts))


def _unit(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


# ---- Sinkhorn ----

@pytest.mark.parametrize("b, k, eps, iters", [(6, 4, 0.05, 3), (16, 10, 0.05, 3), (5, 12, 0.1, 1), (12, 3, 0.5, 7)])
def test_sinkhorn_matches_numpy(rng, b, k, eps, iters):
    scores = np.tanh(rng.normal(size=(b, k))).astype(np.float32)  # cosine-like, in [-1, 1]
    codes = sinkhorn(scores, eps, iters).numpy()
    np.testing.assert_allclose(codes, np_sinkhorn(scores, eps, iters), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(codes.sum(axis=1), 1.0, rtol=1e-5)  # every sample: one unit of mass
    assert np.all(codes >= 0)


def test_sinkhorn_marginals_converge_to_equipartition(rng):
    """With enough iterations every prototype receives B/K of the batch (rows of Q sum to 1/K
    before the final scaling by B) and every sample 1 (columns to 1/B)."""
    b, k = 12, 4
    scores = np.tanh(rng.normal(size=(b, k)) * 2).astype(np.float32)
    few = sinkhorn(scores, 0.05, 3).numpy()
    many = sinkhorn(scores, 0.05, 200).numpy()
    np.testing.assert_allclose(many.sum(axis=0), b / k, rtol=1e-3)
    np.testing.assert_allclose(many.sum(axis=1), 1.0, rtol=1e-5)
    # more iterations come closer to equal shares (3 are not there yet on these peaked scores)
    gap = lambda codes: np.abs(codes.sum(axis=0) - b / k).max()  # noqa: E731
    assert gap(many) < gap(sinkhorn(scores, 0.05, 20).numpy()) < gap(few) < gap(sinkhorn(scores, 0.05, 1).numpy())
    # exp(scores / eps) beyond float32's range (exp(+-200)): no overflow, no all-zero column
    big = sinkhorn(scores * 5, 0.05, 3).numpy()
    assert np.all(np.isfinite(big))
    np.testing.assert_allclose(big, np_sinkhorn(scores * 5, 0.05, 3), rtol=1e-4, atol=1e-7)


def test_sinkhorn_on_two_replicas_equals_one_device(rng, two_device_strategy):
    scores = np.tanh(rng.normal(size=(8, 6))).astype(np.float32)
    expected = sinkhorn(scores, 0.05, 3).numpy()
    strategy = two_device_strategy
    per_replica = strategy.run(tf.function(lambda v: sinkhorn(v["s"], 0.05, 3)),
                               (distribute_views(strategy, {"s": tf.constant(scores)}),))
    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(per_replica)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # per-replica statistics would give something else
    halves = np.concatenate([np_sinkhorn(scores[:4], 0.05, 3), np_sinkhorn(scores[4:], 0.05, 3)])
    assert np.abs(halves - expected).max() > 1e-3


# ---- SwAV loss ----

@pytest.mark.parametrize("views, coded, b, k, t", [(8, 2, 5, 6, 0.1), (3, 2, 4, 3, 0.5), (2, 2, 3, 5, 0.1)])
def test_swav_loss_matches_numpy_and_central_differences(rng, views, coded, b, k, t):
    scores = np.tanh(rng.normal(size=(views, b, k))).astype(np.float32)
    codes = np.stack([np_sinkhorn(s, 0.05, 3) for s in scores[:coded]]).astype(np.float32)
    loss = float(swav_loss(scores, codes, t))
    assert loss == pytest.approx(np_swav_loss(scores, codes, t), rel=1e-5)
    s = tf.constant(scores)
    with tf.GradientTape() as tape:
        tape.watch(s)
        value = swav_loss(s, codes, t)
    grad = tape.gradient(value, s).numpy()
    numeric = central_differences(lambda x: np_swav_loss(x, codes, t), scores)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


# ---- DINO loss and centre ----

@pytest.mark.parametrize("views, large, b, k, ts, tt", [(6, 2, 4, 5, 0.1, 0.04), (2, 2, 3, 7, 0.1, 0.07),
                                                         (4, 2, 2, 3, 0.5, 0.2)])
def test_dino_loss_matches_numpy_and_central_differences(rng, views, large, b, k, ts, tt):
    student = rng.normal(size=(views, b, k)).astype(np.float32)
    teacher = rng.normal(size=(large, b, k)).astype(np.float32)
    center = (0.3 * rng.normal(size=k)).astype(np.float32)
    loss = float(dino_loss(student, teacher, center, ts, tt))
    assert loss == pytest.approx(np_dino_loss(student, teacher, center, ts, tt), rel=1e-5)
    # the centre matters
    assert abs(float(dino_loss(student, teacher, np.zeros(k, np.float32), ts, tt)) - loss) > 1e-4
    s, t = tf.constant(student), tf.constant(teacher)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([s, t])
        value = dino_loss(s, t, center, ts, tt)
    numeric = central_differences(lambda x: np_dino_loss(x, teacher, center, ts, tt), student)
    np.testing.assert_allclose(tape.gradient(value, s).numpy(), numeric, rtol=1e-3, atol=1e-5)
    assert tape.gradient(value, t) is None  # the teacher is a target only


def test_dino_batch_center_is_the_global_mean(rng, two_device_strategy):
    teacher = rng.normal(size=(2, 8, 5)).astype(np.float32)
    expected = teacher.astype(np.float64).mean(axis=(0, 1))
    np.testing.assert_allclose(dino_batch_center(teacher).numpy(), expected, rtol=1e-5, atol=1e-6)
    strategy = two_device_strategy
    # split along the batch axis (axis 1): replica r gets images r*4..r*4+3 of both crops
    per_image = {"t": tf.constant(np.transpose(teacher, (1, 0, 2)))}
    fn = tf.function(lambda v: dino_batch_center(tf.transpose(v["t"], (1, 0, 2))))
    result = strategy.run(fn, (distribute_views(strategy, per_image),))
    for local in strategy.experimental_local_results(result):
        np.testing.assert_allclose(local.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(teacher[:, :4].mean(axis=(0, 1)) - expected).max() > 1e-3


def test_teacher_temperature_schedule():
    values = [float(teacher_temperature(p, 0.04, 0.07, 0.3)) for p in (0.0, 0.15, 0.3, 0.5, 1.0)]
    np.testing.assert_allclose(values, [0.04, 0.055, 0.07, 0.07, 0.07], rtol=1e-6)
    assert float(teacher_temperature(0.0, 0.04, 0.07, 0.0)) == pytest.approx(0.07)
    method = _dino()
    method.compile(optimizer=_sgd())
    assert float(method.teacher_temperature()) == pytest.approx(0.04)  # total_steps unknown: progress 0
    method.total_steps = 10
    method.optimizer.iterations.assign(2)  # 2 of 10 batches: 2/3 of the 0.3 warm-up
    assert float(method.teacher_temperature()) == pytest.approx(0.04 + 0.03 * 0.2 / 0.3, rel=1e-5)


# ---- the methods ----

def _images(n=BATCH, start=0):
    return zoo.data.load_arrays("shapes", "train").images[start:start + n]


def _views(method, seed=(1, 2), start=0):
    return method.make_views(tf.constant(_images(start=start)), tf.constant(np.zeros(BATCH, np.int32)),
                             tf.constant(seed))


def _sgd(lr=0.05):
    return make_optimizer("sgd", lr, momentum=0.9)


def _fit(method, views, steps=1):
    return method.fit(tf.data.Dataset.from_tensors(views).repeat(steps), epochs=1, verbose=0).history


SMALL_SWAV = dict(num_prototypes=20, projection_hidden_dim=32, projection_dim=16, num_small_crops=2)
SMALL_DINO = dict(head_hidden_dim=32, head_bottleneck_dim=16, head_output_dim=24, num_small_crops=2)


def _swav(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("swav", **{**TINY, **SMALL_SWAV, **overrides})


def _dino(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("dino", **{**TINY, **SMALL_DINO, **overrides})


def test_swav_loss_of_the_method_matches_numpy():
    method = _swav()
    views = _views(method)
    assert views["large"].shape == (BATCH, 2, 32, 32, 3) and views["small"].shape == (BATCH, 2, 16, 16, 3)
    z = method.embed(views, training=False).numpy().astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    kernel = method.prototypes.kernel.numpy().astype(np.float64)
    scores = z @ kernel
    codes = np.stack([np_sinkhorn(s, 0.05, 3) for s in scores[:2]])
    loss, _ = method.pretext_loss(views, training=False)
    assert float(loss) == pytest.approx(np_swav_loss(scores, codes, 0.1), rel=1e-4)


def test_swav_prototypes_are_unit_columns_after_a_step_and_frozen_during_the_window():
    method = _swav(freeze_prototypes_steps=2)
    kernel = method.prototypes.kernel
    np.testing.assert_allclose(np.linalg.norm(kernel.numpy(), axis=0), 1.0, rtol=1e-6)
    method.compile(optimizer=_sgd(0.5))
    start, encoder_start = kernel.numpy(), method.encoder.weights[0].numpy()
    _fit(method, _views(method), steps=2)
    np.testing.assert_allclose(kernel.numpy(), start, atol=1e-6)  # frozen for 2 updates
    assert np.abs(method.encoder.weights[0].numpy() - encoder_start).max() > 1e-4  # the rest trains
    _fit(method, _views(method, seed=(2, 3)))
    assert np.abs(kernel.numpy() - start).max() > 1e-4  # update 3 moves them
    np.testing.assert_allclose(np.linalg.norm(kernel.numpy(), axis=0), 1.0, rtol=1e-5)
    # without the unit-norm projection the step would have left other norms
    free = _swav()
    free.compile(optimizer=_sgd(0.5))
    with tf.GradientTape() as tape:
        loss, _ = free.pretext_loss(_views(free), training=True)
    grad = tape.gradient(loss, free.prototypes.kernel).numpy()
    assert np.abs(np.linalg.norm(free.prototypes.kernel.numpy() - 0.5 * grad, axis=0) - 1.0).max() > 1e-3


def test_swav_queue_holds_the_large_crop_projections_and_feeds_sinkhorn():
    method = _swav(queue_size=16, queue_start_steps=1)
    method.compile(optimizer=_sgd(0.0))  # weights fixed: the projections are reproducible
    rows = []
    for step in range(2):
        views = _views(method, seed=(4, step), start=BATCH * step)
        z = method.embed(views, training=True).numpy()  # the step's forward, training mode
        rows.append(np.transpose(z[:2], (1, 0, 2)).reshape(BATCH, -1))
        _fit(method, views)
    np.testing.assert_allclose(method.queue.keys.numpy(), np.concatenate(rows), atol=1e-5)
    assert int(method.queue_filled.numpy()) == 16
    # now (update 2 >= queue_start_steps, queue full) the codes come from queue + batch
    views = _views(method, seed=(9, 9), start=2 * BATCH)
    z = method.embed(views, training=False).numpy().astype(np.float64)
    kernel = method.prototypes.kernel.numpy().astype(np.float64)
    queue = method.queue.keys.numpy().astype(np.float64).reshape(16, 2, -1)
    codes = np.stack([np_sinkhorn(np.concatenate([queue[:, a] @ kernel, z[a] @ kernel]), 0.05, 3)[-BATCH:]
                      for a in range(2)])
    loss, _ = method.pretext_loss(views, training=False)
    assert float(loss) == pytest.approx(np_swav_loss(z @ kernel, codes, 0.1), rel=1e-4)
    without = np.stack([np_sinkhorn(z[a] @ kernel, 0.05, 3) for a in range(2)])
    assert abs(np_swav_loss(z @ kernel, without, 0.1) - float(loss)) > 1e-3


def _teacher_vars(method):
    return method.teacher_encoder.weights + method.teacher_head.weights


def test_dino_teacher_is_frozen_and_gets_no_gradient():
    method = _dino()
    for t, s in zip(_teacher_vars(method), method.encoder.weights + method.head.weights):
        np.testing.assert_array_equal(t.numpy(), s.numpy())
    teacher_ids = {id(v) for v in _teacher_vars(method)}
    assert not teacher_ids & {id(v) for v in method.trainable_variables}
    assert {id(v) for v in method.trainable_variables} == {
        id(v) for v in method.encoder.trainable_variables + method.head.trainable_variables}
    views = _views(method)
    assert views["large"].shape == (BATCH, 2, 32, 32, 3) and views["small"].shape == (BATCH, 2, 16, 16, 3)
    with tf.GradientTape() as tape:
        loss, _ = method.pretext_loss(views, training=True)
    assert all(g is None for g in tape.gradient(loss, _teacher_vars(method) + [method.center]))


def test_dino_teacher_ema_and_centre_after_a_fit_step_match_numpy():
    method = _dino(base_momentum=0.9, center_momentum=0.8)
    method.total_steps = 4
    targets, onlines = momentum.momentum_pairs([method.teacher_encoder, method.teacher_head],
                                               [method.encoder, method.head])
    rng = np.random.default_rng(0)
    for t in targets:  # move the teacher away from the student (equal at initialisation)
        t.assign(t.numpy() + 0.05 * rng.normal(size=t.shape).astype(np.float32))
    center0 = rng.normal(size=24).astype(np.float32)
    method.center.assign(center0)
    views = _views(method)
    teacher = method.teacher_logits(views, training=True).numpy().astype(np.float64)
    student = method.student_logits(views, training=True).numpy()
    expected_loss = np_dino_loss(student, teacher, center0, 0.1, 0.04)
    old_teacher = [t.numpy() for t in targets]
    method.compile(optimizer=_sgd())
    history = _fit(method, views)
    assert history["loss"][0] == pytest.approx(expected_loss, rel=1e-4)  # read the old centre
    np.testing.assert_allclose(method.center.numpy(), 0.8 * center0 + 0.2 * teacher.mean(axis=(0, 1)),
                               rtol=1e-5, atol=1e-5)
    m = 1.0 - 0.1 * (np.cos(0.0) + 1) / 2  # the cosine schedule at progress 0 (batches seen before the step)
    moved = 0
    for t, o, t0 in zip(targets, onlines, old_teacher):
        np.testing.assert_allclose(t.numpy(), m * t0 + (1 - m) * o.numpy(), rtol=1e-5, atol=1e-6, err_msg=t.path)
        moved += np.abs(t.numpy() - t0).max() > 1e-5
    assert moved > len(targets) // 2
    # second step: progress 1/4, momentum 1 - 0.1 (cos(pi/4) + 1) / 2
    old_teacher = [t.numpy() for t in targets]
    _fit(method, _views(method, seed=(5, 5)))
    m = 1.0 - 0.1 * (np.cos(np.pi / 4) + 1) / 2
    for t, o, t0 in zip(targets, onlines, old_teacher):
        np.testing.assert_allclose(t.numpy(), m * t0 + (1 - m) * o.numpy(), rtol=1e-5, atol=1e-6, err_msg=t.path)
