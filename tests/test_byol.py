"""BYOL against independent references: solarization against numpy, the asymmetric views'
probabilities, the target momentum schedule against the paper's formula at the start, middle
and end of a run, the target's EMA update after a fit step against numpy at a known point of
the run (and no move on an accumulating batch), the target is not trainable and gets no
gradient, the step's loss against numpy on the sub-networks' outputs (identical and different
views), and a checkpoint restores the target exactly."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import augment, momentum
from zoo.optimizers import make_optimizer

TINY = dict(backbone="resnet18", width=0.125, image_size=32, projection_hidden_dim=64, projection_dim=16,
            prediction_hidden_dim=64)
BATCH = 8


def _byol(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("byol", **{**TINY, **overrides})


def _views(method, seed=(1, 2)):
    images = zoo.data.load_arrays("shapes", "train").images[:BATCH]
    return method.make_views(tf.constant(images), tf.constant(np.arange(BATCH)), tf.constant(seed))


def _pairs(method):
    return momentum.momentum_pairs([method.target_encoder, method.target_projector], [method.encoder, method.projector])


def _target_vars(method):
    return method.target_encoder.weights + method.target_projector.weights


def _np_byol_loss(p, z):
    """Symmetrised normalised MSE of p [2N, D] (views a then b) against z [2N, D], in float64."""
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    p, z = p / np.linalg.norm(p, axis=1, keepdims=True), z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(p) // 2
    mse = lambda a, b: float(np.mean(np.sum((a - b) ** 2, axis=1)))  # noqa: E731
    return mse(p[:n], z[n:]) + mse(p[n:], z[:n])


def _perturb_target(method, scale=0.05):
    rng = np.random.default_rng(0)
    for t in _pairs(method)[0]:
        t.assign(t.numpy() + scale * rng.normal(size=t.shape).astype(np.float32))


def _compile(method, steps_done=0, total_steps=None, run_eagerly=False, **kwargs):
    method.compile(optimizer=make_optimizer("sgd", 0.05, momentum=0.9, **kwargs), run_eagerly=run_eagerly)
    method.optimizer.build(method.trainable_variables)
    if steps_done:
        method.optimizer.iterations.assign(steps_done)
    method.total_steps = total_steps


# --- views -----------------------------------------------------------------------------------

def test_solarize_matches_numpy(rng):
    images = rng.uniform(size=(4, 5, 5, 3)).astype(np.float32)
    images[0, 0, 0] = [0.5, 0.4999, 1.0]
    expected = np.where(images < 0.5, images, 1.0 - images)
    np.testing.assert_allclose(augment.solarize(images, tf.constant([1, 2]), p=1.0).numpy(), expected, atol=1e-7)
    np.testing.assert_array_equal(augment.solarize(images, tf.constant([1, 2]), p=0.0).numpy(), images)
    mixed = augment.solarize(np.repeat(images[:1], 400, 0), tf.constant([3, 4]), p=0.2).numpy()
    solarized = np.array([np.allclose(m, expected[0], atol=1e-7) for m in mixed])
    unchanged = np.array([np.array_equal(m, images[0]) for m in mixed])
    assert np.all(solarized ^ unchanged) and 0.13 < solarized.mean() < 0.27


def test_views_are_asymmetric_as_configured():
    method = _byol(blur_p=(1.0, 0.0), solarize_p=(0.0, 1.0))
    flat = np.full((BATCH, 32, 32, 3), 200, np.uint8)  # 0.78: solarization turns it into 0.22
    views = method.make_views(tf.constant(flat), tf.constant(np.arange(BATCH)), tf.constant([1, 2]))
    # view a: a flat image stays flat under crops, jitter and blur, and is never solarized;
    # view b: solarized (p = 1), unless the colour jitter pushed it below 0.5 first
    a = views["view_a"].numpy()
    assert np.allclose(a, a[:, :1, :1], atol=1e-5)
    no_jitter = augment.byol_view(augment.to_float(flat), 32, tf.constant([0, 0]), jitter_p=0.0, grayscale_p=0.0,
                                  solarize_p=1.0).numpy()
    np.testing.assert_allclose(no_jitter, 1.0 - 200 / 255, atol=1e-5)
    assert views["view_b"].numpy().max() <= 0.5 + 1e-6 < a.max()


# --- target momentum ---------------------------------------------------------------------------

def test_target_momentum_follows_the_cosine_schedule():
    method = _byol()
    assert float(method.target_momentum()) == pytest.approx(0.996)  # before compile / without total_steps
    for done, expected in ((0, 0.996), (25, 1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2), (50, 0.998),
                           (100, 1.0), (150, 1.0)):
        _compile(method, done, total_steps=100)
        assert float(method.target_momentum()) == pytest.approx(expected, abs=1e-7), done
    np.testing.assert_allclose([float(momentum.cosine_schedule(0.99, 1.0, p)) for p in (0, 0.5, 1)],
                               [0.99, 0.995, 1.0], atol=1e-7)


def test_target_moves_by_the_scheduled_momentum_after_a_fit_step():
    method = _byol(base_momentum=0.9)
    _perturb_target(method)
    targets, onlines = _pairs(method)
    assert len(targets) == len(method.encoder.trainable_variables + method.projector.trainable_variables)
    old_target, old_online = [t.numpy() for t in targets], [o.numpy() for o in onlines]
    _compile(method, steps_done=5, total_steps=10)  # progress 0.5: tau = 0.95
    history = method.fit(tf.data.Dataset.from_tensors(_views(method)), epochs=1, verbose=0).history
    assert history["target_momentum"][0] == pytest.approx(0.95, abs=1e-6)
    tau, moved = 0.95, 0
    for t, o, t0, o0 in zip(targets, onlines, old_target, old_online):
        o1 = o.numpy()
        np.testing.assert_allclose(t.numpy(), tau * t0 + (1 - tau) * o1, rtol=1e-5, atol=1e-6, err_msg=t.path)
        if np.abs(o1 - o0).max() > 1e-4:  # the NEW online weights were averaged in, not the old ones
            moved += 1
            assert not np.allclose(t.numpy(), tau * t0 + (1 - tau) * o0, rtol=1e-5, atol=1e-6), t.path
    assert moved > len(targets) // 2


def test_target_waits_for_the_optimizer_under_gradient_accumulation():
    method = _byol(base_momentum=0.5)
    _compile(method, accumulate_steps=2)
    targets, _ = _pairs(method)
    before = [t.numpy() for t in targets]
    method.fit(tf.data.Dataset.from_tensors(_views(method)), epochs=1, verbose=0)  # accumulated only
    for t, b in zip(targets, before):
        np.testing.assert_array_equal(t.numpy(), b)
    method.fit(tf.data.Dataset.from_tensors(_views(method, (2, 3))), epochs=1, verbose=0)  # the update
    assert sum(not np.array_equal(t.numpy(), b) for t, b in zip(targets, before)) > len(targets) // 2


# --- networks and loss -------------------------------------------------------------------------

def test_target_starts_equal_is_not_trainable_and_gets_no_gradient():
    method = _byol()
    for t, o in zip(_target_vars(method), method.encoder.weights + method.projector.weights):
        np.testing.assert_array_equal(t.numpy(), o.numpy())
    target_ids = {id(v) for v in _target_vars(method)}
    trainable = {id(v) for v in method.trainable_variables}
    assert not target_ids & trainable
    assert trainable == {id(v) for m in (method.encoder, method.projector, method.predictor)
                         for v in m.trainable_variables}
    _perturb_target(method)
    with tf.GradientTape() as tape:
        loss, _ = method.pretext_loss(_views(method), training=True)
    assert all(g is None for g in tape.gradient(loss, _target_vars(method)))


def test_loss_matches_numpy_on_the_networks_outputs():
    method = _byol()
    _perturb_target(method, 0.1)
    views = _views(method)
    for a, b in ((views["view_a"], views["view_a"]), (views["view_a"], views["view_b"])):
        x = tf.concat([a, b], 0)
        p = method.predictor(method.projector(method.encoder(x, training=True), training=True), training=True)
        z = method.target_projector(method.target_encoder(x, training=True), training=True)
        loss, _ = method.pretext_loss({"view_a": a, "view_b": b}, training=True)
        assert float(loss) == pytest.approx(_np_byol_loss(p, z), rel=1e-5)
    # identical views through identical networks: both terms equal 2 - 2 cos(q(z), z)
    same = _byol()
    x = tf.concat([views["view_a"]] * 2, 0)
    z = same.projector(same.encoder(x, training=True), training=True).numpy().astype(np.float64)
    p = same.predictor(z.astype(np.float32), training=True).numpy().astype(np.float64)
    cos = np.sum(p * z, 1) / np.linalg.norm(p, axis=1) / np.linalg.norm(z, axis=1)
    loss, _ = same.pretext_loss({"view_a": views["view_a"], "view_b": views["view_a"]}, training=True)
    assert float(loss) == pytest.approx(2 * np.mean(2 - 2 * cos), rel=1e-5)


def test_checkpoint_restores_the_target_exactly(tmp_path):
    method = _byol(base_momentum=0.9)
    _compile(method, run_eagerly=True)  # the checkpoint is the point, not the trace
    views = _views(method)
    method.fit(tf.data.Dataset.from_tensors(views).repeat(2), epochs=1, verbose=0)
    method.save_weights(tmp_path / "byol.weights.h5")
    keras.utils.set_random_seed(42)
    restored = zoo.create("byol", **TINY, base_momentum=0.9)
    restored.load_weights(tmp_path / "byol.weights.h5")
    for a, b in zip(_target_vars(restored), _target_vars(method)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the target differs from the online network after training (so it was saved on its own)
    assert not np.allclose(restored.target_encoder.weights[0].numpy(), restored.encoder.weights[0].numpy())
    assert float(restored.pretext_loss(views)[0]) == pytest.approx(float(method.pretext_loss(views)[0]), rel=1e-6)
