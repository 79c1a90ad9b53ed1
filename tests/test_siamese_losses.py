"""zoo.losses.siamese (BYOL, SimSiam, MoCo v3) against independent references: numpy written
from the papers (BYOL's normalised MSE ||p/|p| - z/|z|||^2, SimSiam's D = -cos, MoCo v3's
cross-entropy of q.k/t times 2t), central differences of those numpy functions for the
gradients, zero gradient through the target branch (stop-gradient), and, for MoCo v3's
in-batch negatives, the single-device value on 2 replicas."""
import numpy as np
import pytest
import tensorflow as tf

from zoo.distribute import distribute_views
from zoo.losses import byol_loss, mocov3_logits, mocov3_loss, negative_cosine, simsiam_loss
from numerics import central_differences


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_normalised_mse(p, z):
    """BYOL eq. 2: mean over the batch of ||p/|p| - z/|z|||^2."""
    return float(np.mean(np.sum((_unit(p) - _unit(z)) ** 2, axis=1)))


def _np_byol(p_a, p_b, z_a, z_b):
    return _np_normalised_mse(p_a, z_b) + _np_normalised_mse(p_b, z_a)


def _np_d(p, z):
    """SimSiam's D: minus the mean cosine of the rows of p and z."""
    return -float(np.mean([pi @ zi / (np.linalg.norm(pi) * np.linalg.norm(zi)) for pi, zi in zip(p, z)]))


def _np_simsiam(p_a, p_b, z_a, z_b):
    return 0.5 * _np_d(p_a, z_b) + 0.5 * _np_d(p_b, z_a)


def _np_ctr(q, k, t):
    """-log softmax_j(q_i . k_j / t)[i], mean over i, times 2t (q, k normalised)."""
    logits = _unit(q) @ _unit(k).T / t
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(lse - np.diag(logits))) * 2 * t


def _np_mocov3(q_a, q_b, k_a, k_b, t):
    return _np_ctr(q_a, k_b, t) + _np_ctr(q_b, k_a, t)


def _tensors(rng, n=6, d=5):
    return [rng.normal(size=(n, d)) for _ in range(4)]


@pytest.mark.parametrize("scale", [1.0, 30.0])  # the loss does not depend on the embeddings' norms
def test_byol_and_simsiam_losses_match_numpy(rng, scale):
    p_a, p_b, z_a, z_b = _tensors(rng)
    args = [tf.constant(scale * x, tf.float32) for x in (p_a, p_b, z_a, z_b)]
    assert float(byol_loss(*args)) == pytest.approx(_np_byol(p_a, p_b, z_a, z_b), rel=1e-5)
    assert float(simsiam_loss(*args)) == pytest.approx(_np_simsiam(p_a, p_b, z_a, z_b), rel=1e-5)
    # the pairing is crossed: p_a is compared with z_b, not z_a
    assert abs(_np_byol(p_a, p_b, z_a, z_b) - (_np_normalised_mse(p_a, z_a) + _np_normalised_mse(p_b, z_b))) > 1e-2
    # BYOL's 2 - 2 cos and SimSiam's -cos: one implementation, byol = 4 + 4 simsiam
    assert float(byol_loss(*args)) == pytest.approx(4 + 4 * float(simsiam_loss(*args)), rel=1e-5)


def test_identical_predictions_and_targets_reach_the_minimum(rng):
    p = rng.normal(size=(4, 3)).astype(np.float32)
    assert float(byol_loss(p, p, 2 * p, 3 * p)) == pytest.approx(0.0, abs=1e-6)
    assert float(simsiam_loss(p, p, 2 * p, 3 * p)) == pytest.approx(-1.0, abs=1e-6)
    assert float(negative_cosine(p, -p)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["byol", "simsiam"])
def test_gradients_match_central_differences_and_the_target_gets_none(rng, name):
    loss_fn, np_fn = {"byol": (byol_loss, _np_byol), "simsiam": (simsiam_loss, _np_simsiam)}[name]
    p_a, p_b, z_a, z_b = _tensors(rng, n=4, d=3)
    tensors = [tf.Variable(x, dtype=tf.float64) for x in (p_a, p_b, z_a, z_b)]
    with tf.GradientTape() as tape:
        loss = loss_fn(*tensors)
    grads = tape.gradient(loss, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    np.testing.assert_allclose(grads[0].numpy(), central_differences(lambda x: np_fn(x, p_b, z_a, z_b), p_a),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[1].numpy(), central_differences(lambda x: np_fn(p_a, x, z_a, z_b), p_b),
                               rtol=1e-4, atol=1e-6)
    assert np.abs(grads[0].numpy()).max() > 1e-3
    # stop-gradient: nothing flows into the targets z, although the loss depends on them
    np.testing.assert_array_equal(grads[2].numpy(), 0.0)
    np.testing.assert_array_equal(grads[3].numpy(), 0.0)
    assert np.abs(central_differences(lambda x: np_fn(p_a, p_b, x, z_b), z_a)).max() > 1e-3


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_mocov3_loss_matches_numpy_and_central_differences(rng, t):
    q_a, q_b, k_a, k_b = _tensors(rng, n=5, d=4)
    tensors = [tf.Variable(x, dtype=tf.float64) for x in (q_a, q_b, k_a, k_b)]
    with tf.GradientTape() as tape:
        loss = mocov3_loss(*tensors, temperature=t)
    assert float(loss) == pytest.approx(_np_mocov3(q_a, q_b, k_a, k_b, t), rel=1e-5)
    grads = tape.gradient(loss, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    np.testing.assert_allclose(grads[0].numpy(), central_differences(lambda x: _np_mocov3(x, q_b, k_a, k_b, t), q_a),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[1].numpy(), central_differences(lambda x: _np_mocov3(q_a, x, k_a, k_b, t), q_b),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(grads[2].numpy(), 0.0)  # keys: no gradient
    np.testing.assert_array_equal(grads[3].numpy(), 0.0)
    logits, labels = mocov3_logits(q_a, k_b, t)
    np.testing.assert_allclose(logits.numpy(), _unit(q_a) @ _unit(k_b).T / t, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), np.arange(5))


def test_mocov3_loss_on_two_replicas_uses_the_keys_of_the_global_batch(rng, two_device_strategy):
    strategy = two_device_strategy
    q_a, q_b, k_a, k_b = (x.astype(np.float32) for x in _tensors(rng, n=8, d=4))
    t = 0.2
    expected = _np_mocov3(q_a, q_b, k_a, k_b, t)
    qa = tf.Variable(q_a)
    with tf.GradientTape() as tape:
        single = mocov3_loss(qa, q_b, k_a, k_b, t)
    single_grad = tape.gradient(single, qa).numpy()
    assert float(single) == pytest.approx(expected, rel=1e-5)
    views = {k: tf.constant(v) for k, v in dict(q_a=q_a, q_b=q_b, k_a=k_a, k_b=k_b).items()}

    @tf.function
    def run(v, cross_replica):
        def replica_fn(v):
            with tf.GradientTape() as tape:
                tape.watch(v["q_a"])
                local = mocov3_loss(v["q_a"], v["q_b"], v["k_a"], v["k_b"], t, cross_replica=cross_replica)
                scaled = local / strategy.num_replicas_in_sync
            return local, tape.gradient(scaled, v["q_a"])
        local, grad = strategy.run(replica_fn, (v,))
        return strategy.reduce("MEAN", local, axis=None), strategy.experimental_local_results(grad)

    loss, grads = run(distribute_views(strategy, views), True)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in grads]), single_grad, rtol=1e-4, atol=1e-6)
    # without the gather each replica sees only its 4 keys: another loss
    local_only, _ = run(distribute_views(strategy, views), False)
    assert abs(float(local_only) - expected) > 1e-3
    half = 0.5 * (_np_mocov3(q_a[:4], q_b[:4], k_a[:4], k_b[:4], t) + _np_mocov3(q_a[4:], q_b[4:], k_a[4:], k_b[4:], t))
    assert float(local_only) == pytest.approx(half, rel=1e-5)
