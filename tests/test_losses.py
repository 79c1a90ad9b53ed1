"""zoo.losses against independent references: a plain-numpy NT-Xent written from SimCLR's eq. 1
(Chen et al. 2020), a hand-computed 2-image case, numpy finite differences, numpy softmax
cross-entropy / accuracy, and the single-device loss for the 2-replica MirroredStrategy case."""
import math

import numpy as np
import pytest
import tensorflow as tf

from zoo.losses import accuracy, cross_entropy, gather_across_replicas, nt_xent
from numerics import central_differences


def _numpy_nt_xent(z_a, z_b, temperature):
    """SimCLR eq. 1 in float64: 2N views z_1..z_2N (view i of image k: rows k and N + k);
    l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t); loss = mean over all 2N i."""
    z = np.concatenate([z_a, z_b], 0).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = z.shape[0]
    n = n2 // 2
    sim = z @ z.T / temperature
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        others = [k for k in range(n2) if k != i]
        m = max(sim[i, k] for k in others)
        log_denom = m + math.log(sum(math.exp(sim[i, k] - m) for k in others))
        total += -(sim[i, j] - log_denom)
    return total / n2


@pytest.mark.parametrize("n, dim, temperature", [(1, 3, 0.5), (2, 2, 0.1), (4, 8, 0.5), (7, 5, 1.0),
                                                 (16, 32, 0.2), (5, 128, 0.07)])
def test_nt_xent_matches_numpy(rng, n, dim, temperature):
    z_a = rng.normal(size=(n, dim)).astype(np.float32)
    z_b = rng.normal(size=(n, dim)).astype(np.float32)
    got = float(nt_xent(z_a, z_b, temperature))
    np.testing.assert_allclose(got, _numpy_nt_xent(z_a, z_b, temperature), rtol=1e-5, atol=1e-5)
    # Outside a replica context cross_replica must make no difference.
    got_local = float(nt_xent(z_a, z_b, temperature, cross_replica=False))
    np.testing.assert_allclose(got_local, got, rtol=1e-6, atol=1e-6)


def test_nt_xent_hand_computed_case():
    # N = 2, t = 1. z_a = [e1, e2], z_b = [e1, -e2] (unit vectors, so cos = dot product).
    # Views: v0 = e1, v1 = e2, v2 = e1 (pair of v0), v3 = -e2 (pair of v1).
    # v0: positive v2 (cos 1), negatives v1 (0), v3 (0): l = -log(e / (e + 2)) = log(1 + 2/e).
    # v2: same as v0 by symmetry: log(1 + 2/e).
    # v1: positive v3 (cos -1), negatives v0 (0), v2 (0): l = -log(e^-1 / (e^-1 + 2)) = log(1 + 2e).
    # v3: same as v1: log(1 + 2e).
    # Mean: (log(1 + 2/e) + log(1 + 2e)) / 2 = log((1 + 2/e)(1 + 2e)) / 2 = log(5 + 2e + 2/e) / 2.
    expected = 0.5 * math.log(5 + 2 * math.e + 2 / math.e)  # = 1.19660...
    z_a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    z_b = np.array([[1.0, 0.0], [0.0, -1.0]], np.float32)
    np.testing.assert_allclose(float(nt_xent(z_a, z_b, 1.0)), expected, rtol=1e-6)
    # Halving the temperature doubles every similarity: log(1 + 2/e^2) and log(1 + 2 e^2).
    expected_half = 0.5 * (math.log(1 + 2 / math.e ** 2) + math.log(1 + 2 * math.e ** 2))
    np.testing.assert_allclose(float(nt_xent(z_a, z_b, 0.5)), expected_half, rtol=1e-6)
    # Non-unit vectors: 3 * e1 and 0.5 * e1 are the same direction.
    np.testing.assert_allclose(float(nt_xent(z_a * [[3.0], [0.2]], z_b * [[0.5], [7.0]], 1.0)), expected,
                               rtol=1e-6)


def test_nt_xent_is_scale_invariant(rng):
    z_a = rng.normal(size=(6, 10)).astype(np.float32)
    z_b = rng.normal(size=(6, 10)).astype(np.float32)
    base = float(nt_xent(z_a, z_b, 0.3))
    scales_a = rng.uniform(0.1, 10.0, size=(6, 1)).astype(np.float32)
    scales_b = rng.uniform(0.1, 10.0, size=(6, 1)).astype(np.float32)
    np.testing.assert_allclose(float(nt_xent(z_a * scales_a, z_b * scales_b, 0.3)), base, rtol=1e-5)
    np.testing.assert_allclose(float(nt_xent(100.0 * z_a, 100.0 * z_b, 0.3)), base, rtol=1e-5)


def test_nt_xent_perfect_alignment_beats_random(rng):
    # Identical views of mutually orthogonal images: loss = log(1 + (2N - 2) e^{-1/t}) (hand value).
    n, t = 3, 0.5
    z = np.eye(n, 4, dtype=np.float32)
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / t))
    np.testing.assert_allclose(float(nt_xent(z, z, t)), expected, rtol=1e-6)
    z_rand = rng.normal(size=(n, 4)).astype(np.float32)
    assert float(nt_xent(z, z, t)) < float(nt_xent(z, z_rand, t))


def test_nt_xent_gradient_matches_finite_differences(rng):
    z_a = rng.normal(size=(3, 4))
    z_b = rng.normal(size=(3, 4))
    t = 0.5
    za_t, zb_t = tf.constant(z_a, tf.float32), tf.constant(z_b, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([za_t, zb_t])
        loss = nt_xent(za_t, zb_t, t)
    g_a, g_b = [g.numpy() for g in tape.gradient(loss, [za_t, zb_t])]
    num_a = central_differences(lambda x: _numpy_nt_xent(x, z_b, t), z_a)
    num_b = central_differences(lambda x: _numpy_nt_xent(z_a, x, t), z_b)
    for g, num in ((g_a, num_a), (g_b, num_b)):
        np.testing.assert_allclose(g, num, rtol=1e-3, atol=1e-5)
    assert np.abs(g_a).max() > 1e-3  # a non-trivial gradient


# ---- two replicas (conftest.py splits the CPU into 2 logical devices) ----

@pytest.fixture
def strategy(two_device_strategy):
    return two_device_strategy  # one strategy per session: see conftest.py


def _per_replica(strategy, full):
    """Replica r gets rows [r * B/2, (r + 1) * B/2) of `full`."""
    half = full.shape[0] // 2
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(full[ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half]))


def test_gather_across_replicas_concatenates_in_replica_order(strategy):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)

    def step(x_local):
        gathered, offset = gather_across_replicas(x_local)
        return gathered, offset

    gathered, offset = strategy.run(step, args=(_per_replica(strategy, x),))
    for r, (g, o) in enumerate(zip(strategy.experimental_local_results(gathered),
                                   strategy.experimental_local_results(offset))):
        np.testing.assert_array_equal(g.numpy(), x)
        assert int(o) == 3 * r
    plain, plain_offset = gather_across_replicas(tf.constant(x))
    np.testing.assert_array_equal(plain.numpy(), x)
    assert plain_offset == 0


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_nt_xent_two_replicas_matches_single_device_loss_and_gradient(strategy, rng, temperature):
    assert strategy.num_replicas_in_sync == 2
    batch, d_in, d_out = 6, 5, 4
    x_a = rng.normal(size=(batch, d_in)).astype(np.float32)
    x_b = rng.normal(size=(batch, d_in)).astype(np.float32)
    w0 = rng.normal(size=(d_in, d_out)).astype(np.float32)

    # Single device, full batch: the loss against numpy, and the reference gradient wrt W.
    w_single = tf.Variable(w0)
    with tf.GradientTape() as tape:
        loss_single = nt_xent(tf.constant(x_a) @ w_single, tf.constant(x_b) @ w_single, temperature)
    grad_single = tape.gradient(loss_single, w_single).numpy()
    np.testing.assert_allclose(float(loss_single), _numpy_nt_xent(x_a @ w0, x_b @ w0, temperature), rtol=1e-5)

    with strategy.scope():
        w = tf.Variable(w0)

    def step(xa, xb):
        with tf.GradientTape() as tape:
            z_a, z_b = xa @ w, xb @ w
            loss = nt_xent(z_a, z_b, temperature)
            scaled = loss / tf.distribute.get_replica_context().num_replicas_in_sync
        return loss, tape.gradient(scaled, w)

    losses, grads = strategy.run(tf.function(step), args=(_per_replica(strategy, x_a), _per_replica(strategy, x_b)))
    per_replica = [float(v) for v in strategy.experimental_local_results(losses)]
    assert len(per_replica) == 2
    # Each replica sees its own 3 images against all 12 views, so the two local losses differ ...
    assert abs(per_replica[0] - per_replica[1]) > 1e-4
    # ... and their mean is the full-batch loss, as the numpy reference computes it.
    np.testing.assert_allclose(np.mean(per_replica), _numpy_nt_xent(x_a @ w0, x_b @ w0, temperature),
                               rtol=1e-5, atol=1e-5)
    grad_sum = strategy.reduce(tf.distribute.ReduceOp.SUM, grads, axis=None).numpy()
    np.testing.assert_allclose(grad_sum, grad_single, rtol=1e-4, atol=1e-5)
    assert np.abs(grad_single).max() > 1e-3
    # Both against numpy central differences of the numpy loss wrt W (float64), so that a gradient
    # lost in the all_gather (e.g. negatives treated as constants) cannot pass by matching itself.
    eps, w64 = 1e-6, w0.astype(np.float64)
    grad_numpy = np.zeros_like(w64)
    for idx in np.ndindex(*w64.shape):
        plus, minus = w64.copy(), w64.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad_numpy[idx] = (_numpy_nt_xent(x_a @ plus, x_b @ plus, temperature)
                           - _numpy_nt_xent(x_a @ minus, x_b @ minus, temperature)) / (2 * eps)
    np.testing.assert_allclose(grad_single, grad_numpy, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grad_sum, grad_numpy, rtol=1e-3, atol=1e-5)

    # Without cross-replica negatives each replica's loss is the single-device loss on its half.
    def local_step(xa, xb):
        return nt_xent(xa @ w, xb @ w, temperature, cross_replica=False)

    local = strategy.run(local_step, args=(_per_replica(strategy, x_a), _per_replica(strategy, x_b)))
    for r, value in enumerate(strategy.experimental_local_results(local)):
        rows = slice(3 * r, 3 * r + 3)
        np.testing.assert_allclose(float(value), _numpy_nt_xent(x_a[rows] @ w0, x_b[rows] @ w0, temperature),
                                   rtol=1e-5)


# ---- pretext-classification helpers ----

def _numpy_cross_entropy(labels, logits):
    logits = logits.astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    log_softmax = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return -log_softmax[np.arange(len(labels)), labels].mean()


def test_cross_entropy_matches_numpy(rng):
    logits = (rng.normal(size=(10, 4)) * 3).astype(np.float32)
    labels = rng.integers(0, 4, size=10)
    np.testing.assert_allclose(float(cross_entropy(labels, logits)), _numpy_cross_entropy(labels, logits),
                               rtol=1e-5)
    # int64 labels and float64 logits are accepted too.
    np.testing.assert_allclose(float(cross_entropy(labels.astype(np.int64), logits.astype(np.float64))),
                               _numpy_cross_entropy(labels, logits), rtol=1e-5)
    # Hand case: uniform logits over 4 classes -> log 4.
    np.testing.assert_allclose(float(cross_entropy([0, 3], np.zeros((2, 4), np.float32))), math.log(4), rtol=1e-6)


def test_accuracy_matches_numpy(rng):
    logits = rng.normal(size=(20, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=20)
    expected = np.mean(np.argmax(logits, axis=1) == labels)
    assert 0.0 < expected < 1.0
    np.testing.assert_allclose(float(accuracy(labels, logits)), expected, rtol=1e-6)
    # Hand case: 2 of 3 right.
    hand = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    np.testing.assert_allclose(float(accuracy([1, 0, 0], hand)), 2 / 3, rtol=1e-6)
