"""Barlow Twins and VICReg losses (zoo.losses.decorrelation) against independent references:
numpy's Pearson correlation (np.corrcoef) and covariance (np.cov, np.var) in float64,
hand-computed cases (perfectly correlated / anti-correlated / collapsed embeddings), central
differences for the gradients, and 2 replicas against one device for the same global batch,
for the loss AND its gradients with respect to both embeddings (the statistics must be those
of the global batch, and the value each replica returns must make the base class's division by
the replica count exact). Method-level: the projector's shape and the loss the methods return."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.distribute import distribute_views
from zoo.losses import barlow_twins_loss, barlow_twins_terms, vicreg_loss, vicreg_terms
from numerics import central_differences

# +-1 in every combination: each column has mean 0 and (biased) variance 1, and the columns are
# uncorrelated, so the cross-correlation of x with itself is the identity.
SQUARE = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)


# ---- references ---------------------------------------------------------------------------

def _np_barlow(z_a, z_b, lambd, eps=1e-5):
    """Barlow Twins in float64 from the definition: standardise with the biased batch variance
    (+ eps), C = z_a_n^T z_b_n / N, on-diagonal (1 - C_ii)^2, off-diagonal C_ij^2, i != j."""
    z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    n, d = z_a.shape
    std = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + eps)  # noqa: E731  (np.var: biased)
    c = std(z_a).T @ std(z_b) / n
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lambd * off


def _np_vicreg_terms(z_a, z_b, eps=1e-4):
    z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    d = z_a.shape[1]
    invariance = np.mean((z_a - z_b) ** 2)
    variance = sum(np.mean(np.maximum(0.0, 1.0 - np.sqrt(np.var(z, axis=0, ddof=1) + eps))) for z in (z_a, z_b))
    covariance = 0.0
    for z in (z_a, z_b):
        cov = np.cov(z, rowvar=False)  # unbiased
        covariance += (np.sum(cov ** 2) - np.sum(np.diag(cov) ** 2)) / d
    return invariance, variance, covariance


def _np_vicreg(z_a, z_b, sim=25.0, var=25.0, cov=1.0, eps=1e-4):
    i, v, c = _np_vicreg_terms(z_a, z_b, eps)
    return sim * i + var * v + cov * c


def _pair(rng, n=6, d=4):
    z_a = rng.normal(size=(n, d)).astype(np.float32)
    z_b = (0.6 * z_a + 0.5 * rng.normal(size=(n, d)) + 0.3).astype(np.float32)  # correlated, shifted
    return z_a, z_b


# ---- Barlow Twins ---------------------------------------------------------------------------

def test_barlow_twins_hand_made_cases():
    # identical views with uncorrelated standardised dimensions: C = I (up to eps), loss ~ 0
    assert float(barlow_twins_loss(SQUARE, SQUARE)) == pytest.approx(0.0, abs=1e-8)
    # opposite views: C = -I, every diagonal term (1 - (-1))^2 = 4, nothing off the diagonal
    on, off = (float(t) for t in barlow_twins_terms(SQUARE, -SQUARE, eps=0.0))
    assert on == pytest.approx(8.0, rel=1e-6) and off == pytest.approx(0.0, abs=1e-6)
    # the standardisation removes any per-dimension scale and shift
    scaled = SQUARE * np.array([3.0, 0.5], np.float32) + np.array([7.0, -2.0], np.float32)
    assert float(barlow_twins_loss(scaled, SQUARE)) == pytest.approx(0.0, abs=1e-6)
    # both columns of z_b copy the first column of z_a: C = [[1, 1], [0, 0]]
    copies = np.stack([SQUARE[:, 0], SQUARE[:, 0]], axis=1)
    on, off = (float(t) for t in barlow_twins_terms(SQUARE, copies, eps=0.0))
    assert on == pytest.approx(1.0, rel=1e-6) and off == pytest.approx(1.0, rel=1e-6)
    assert float(barlow_twins_loss(SQUARE, copies, lambd=0.5, eps=0.0)) == pytest.approx(1.5, rel=1e-6)


@pytest.mark.parametrize("n, d, lambd", [(6, 4, 0.0051), (16, 3, 0.5), (5, 9, 1.0)])
def test_barlow_twins_matches_numpy_and_pearson_correlation(rng, n, d, lambd):
    z_a, z_b = _pair(rng, n, d)
    np.testing.assert_allclose(float(barlow_twins_loss(z_a, z_b, lambd)), _np_barlow(z_a, z_b, lambd), rtol=1e-5)
    # with eps = 0, C is the Pearson correlation matrix between the dimensions of z_a and z_b
    pearson = np.corrcoef(z_a.astype(np.float64), z_b.astype(np.float64), rowvar=False)[:d, d:]
    on, off = (float(t) for t in barlow_twins_terms(z_a, z_b, eps=0.0))
    np.testing.assert_allclose(on, np.sum((1 - np.diag(pearson)) ** 2), rtol=1e-5)
    np.testing.assert_allclose(off, np.sum(pearson ** 2) - np.sum(np.diag(pearson) ** 2), rtol=1e-5)


def test_barlow_twins_gradient_matches_central_differences(rng):
    z_a, z_b = _pair(rng, 6, 4)
    a, b = tf.constant(z_a), tf.constant(z_b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss = barlow_twins_loss(a, b, 0.3)
    grad_a, grad_b = tape.gradient(loss, [a, b])
    num_a = central_differences(lambda x: _np_barlow(x, z_b, 0.3), z_a)
    num_b = central_differences(lambda x: _np_barlow(z_a, x, 0.3), z_b)
    assert np.abs(num_a).max() > 0.1
    np.testing.assert_allclose(grad_a.numpy(), num_a, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(grad_b.numpy(), num_b, rtol=1e-3, atol=1e-4)


# ---- VICReg ---------------------------------------------------------------------------------

def test_vicreg_hand_made_cases():
    # identical views, std sqrt(4/3) > 1 per dimension, uncorrelated dimensions: every term 0
    assert [float(t) for t in vicreg_terms(SQUARE, SQUARE)] == pytest.approx([0.0, 0.0, 0.0], abs=1e-7)
    # collapsed: every embedding the same vector -> each branch's hinge is 1 - sqrt(eps) = 0.99
    collapsed = np.ones((4, 2), np.float32)
    invariance, variance, covariance = (float(t) for t in vicreg_terms(collapsed, collapsed))
    assert variance == pytest.approx(2 * 0.99, rel=1e-6) and invariance == 0.0 and covariance == 0.0
    assert float(vicreg_loss(collapsed, collapsed)) == pytest.approx(25 * 1.98, rel=1e-6)
    # a shift between the views costs only invariance: MSE = mean of the squared shifts (1 + 4) / 2
    shifted = SQUARE + np.array([1.0, -2.0], np.float32)
    assert [float(t) for t in vicreg_terms(SQUARE, shifted)] == pytest.approx([2.5, 0.0, 0.0], abs=1e-6)
    # two equal dimensions: Cov = (4/3) [[1, 1], [1, 1]], off-diagonal (16/9) * 2 / d=2 per branch
    equal = np.stack([SQUARE[:, 0], SQUARE[:, 0]], axis=1)
    assert float(vicreg_terms(equal, equal)[2]) == pytest.approx(2 * 16 / 9, rel=1e-6)


@pytest.mark.parametrize("n, d, eps", [(6, 4, 1e-4), (16, 3, 1e-4), (5, 9, 0.5)])
def test_vicreg_matches_numpy(rng, n, d, eps):
    z_a, z_b = _pair(rng, n, d)
    z_b[:, 0] *= 0.2  # one dimension below std 1: the variance hinge is active
    expected = _np_vicreg_terms(z_a, z_b, eps)
    assert expected[1] > 0.01
    np.testing.assert_allclose([float(t) for t in vicreg_terms(z_a, z_b, eps)], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(vicreg_loss(z_a, z_b, 2.0, 3.0, 5.0, eps)),
                               _np_vicreg(z_a, z_b, 2.0, 3.0, 5.0, eps), rtol=1e-5)


def test_vicreg_gradient_matches_central_differences(rng):
    z_a, z_b = _pair(rng, 6, 4)
    z_b[:, 0] *= 0.2
    a, b = tf.constant(z_a), tf.constant(z_b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss = vicreg_loss(a, b)
    grad_a, grad_b = tape.gradient(loss, [a, b])
    num_a = central_differences(lambda x: _np_vicreg(x, z_b), z_a)
    num_b = central_differences(lambda x: _np_vicreg(z_a, x), z_b)
    assert np.abs(num_b[:, 0]).max() > 0.1
    np.testing.assert_allclose(grad_a.numpy(), num_a, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(grad_b.numpy(), num_b, rtol=1e-3, atol=1e-4)


# ---- global batch: 2 replicas against one device --------------------------------------------

LOSSES = {"barlow_twins": (lambda a, b: barlow_twins_loss(a, b, 0.3), lambda a, b: _np_barlow(a, b, 0.3)),
          "vicreg": (vicreg_loss, _np_vicreg)}


def _loss_and_gradients_on_replicas(strategy, loss_fn, z_a, z_b):
    """Every replica's returned loss, and the gradients of the global batch's rows, each
    replica's loss divided by the replica count as the base class's train_step does."""
    @tf.function
    def step(v):
        def replica_fn(v):
            a, b = v["z_a"], v["z_b"]
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                loss = loss_fn(a, b)
                scaled = loss / strategy.num_replicas_in_sync
            return loss, tape.gradient(scaled, [a, b])
        return strategy.run(replica_fn, (v,))

    loss, (grad_a, grad_b) = step(distribute_views(strategy, {"z_a": tf.constant(z_a), "z_b": tf.constant(z_b)}))
    local = strategy.experimental_local_results
    return ([float(x) for x in local(loss)], np.concatenate([g.numpy() for g in local(grad_a)]),
            np.concatenate([g.numpy() for g in local(grad_b)]))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_two_replicas_give_the_loss_and_gradients_of_one_device(rng, two_device_strategy, name):
    loss_fn, reference = LOSSES[name]
    z_a, z_b = _pair(rng, 8, 5)
    z_b[:4] += 3.0  # the two replicas' halves have different means: per-replica statistics would differ
    z_b[:, 0] *= 0.2
    a, b = tf.constant(z_a), tf.constant(z_b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss = loss_fn(a, b)
    grad_a, grad_b = tape.gradient(loss, [a, b])
    assert float(loss) == pytest.approx(reference(z_a, z_b), rel=1e-5)
    per_replica_statistics = np.mean([reference(z_a[:4], z_b[:4]), reference(z_a[4:], z_b[4:])])
    assert abs(per_replica_statistics - float(loss)) > 0.01 * abs(float(loss))

    losses, dist_a, dist_b = _loss_and_gradients_on_replicas(two_device_strategy, loss_fn, z_a, z_b)
    # every replica returns the global loss; the base class's mean over replicas is that loss
    np.testing.assert_allclose(losses, [float(loss)] * 2, rtol=1e-5)
    scale = max(np.abs(grad_a.numpy()).max(), np.abs(grad_b.numpy()).max())
    np.testing.assert_allclose(dist_a, grad_a.numpy(), atol=1e-5 * scale)
    np.testing.assert_allclose(dist_b, grad_b.numpy(), atol=1e-5 * scale)


# ---- the methods ----------------------------------------------------------------------------

TINY = dict(backbone="resnet18", width=0.125, image_size=32, projection_hidden_dim=64, projection_dim=32)


def _views(method):
    images = zoo.data.load_arrays("shapes", "train").images[:8]
    return method.make_views(tf.constant(images), tf.constant(np.arange(8)), tf.constant([1, 2]))


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg"])
def test_methods_project_with_three_layers_and_return_their_losses(name):
    keras.utils.set_random_seed(0)
    method = zoo.create(name, **TINY)
    dense = [layer for layer in method.projector.layers if isinstance(layer, keras.layers.Dense)]
    bn = [layer for layer in method.projector.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [layer.units for layer in dense] == [64, 64, 32] and len(bn) == 2
    assert not any(layer.use_bias for layer in dense)  # the loss ignores shifts: a bias gets no gradient
    views = _views(method)
    loss, metrics = method.pretext_loss(views, training=True)
    z_a = method.embed(views["view_a"], training=True).numpy()
    z_b = method.embed(views["view_b"], training=True).numpy()
    c = method.config
    if name == "barlow_twins":
        expected = c.scale_loss * _np_barlow(z_a, z_b, c.lambd, c.bn_eps)
        assert float(metrics["on_diagonal"]) > 1.0
    else:
        expected = c.scale_loss * _np_vicreg(z_a, z_b, c.sim_weight, c.var_weight, c.cov_weight, c.eps)
        np.testing.assert_allclose([float(metrics[k]) for k in ("invariance", "variance", "covariance")],
                                   _np_vicreg_terms(z_a, z_b, c.eps), rtol=1e-4)
    assert float(loss) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg"])
def test_scale_loss_scales_the_loss(name):
    keras.utils.set_random_seed(0)
    method = zoo.create(name, **TINY, scale_loss=1.0)
    views = _views(method)
    full = float(method.pretext_loss(views, training=True)[0])
    method.config.scale_loss = 0.1
    assert float(method.pretext_loss(views, training=True)[0]) == pytest.approx(0.1 * full, rel=1e-5)
