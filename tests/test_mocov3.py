"""MoCo v3 against independent references: the step's loss against a numpy symmetric InfoNCE
(x 2t) on the sub-networks' outputs, the heads' architecture, the key network's momentum
schedule and its EMA update after a fit step against numpy at a known point of the run, the key
network is not trainable and gets no gradient, and a checkpoint restores it exactly. (The loss
function alone: tests/test_siamese_losses.py, including 2 replicas; the method on 2 replicas:
the shared harness.)"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import momentum
from zoo.optimizers import make_optimizer

TINY = dict(backbone="resnet18", width=0.125, image_size=32, projection_hidden_dim=64, projection_dim=16,
            prediction_hidden_dim=64)
BATCH = 8


def _mocov3(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("mocov3", **{**TINY, **overrides})


def _views(method, seed=(1, 2)):
    images = zoo.data.load_arrays("shapes", "train").images[:BATCH]
    return method.make_views(tf.constant(images), tf.constant(np.arange(BATCH)), tf.constant(seed))


def _pairs(method):
    return momentum.momentum_pairs([method.key_encoder, method.key_projector], [method.encoder, method.projector])


def _key_vars(method):
    return method.key_encoder.weights + method.key_projector.weights


def _perturb_keys(method, scale=0.1):
    rng = np.random.default_rng(0)
    for t in _pairs(method)[0]:
        t.assign(t.numpy() + scale * rng.normal(size=t.shape).astype(np.float32))


def _np_ctr(q, k, t):
    """2t x mean over i of -log( exp(q_i.k_i / t) / sum_j exp(q_i.k_j / t) ), q, k normalised."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(q)):
        s = np.array([q[i] @ k[j] / t for j in range(len(k))])
        total += np.log(np.sum(np.exp(s - s.max()))) + s.max() - s[i]
    return 2 * t * total / len(q)


def test_heads_and_key_network():
    method = _mocov3(projection_layers=2)
    dense = lambda m: [layer for layer in m.layers if isinstance(layer, keras.layers.Dense)]  # noqa: E731
    assert [d.units for d in dense(method.projector)] == [64, 16]
    assert [d.units for d in dense(_mocov3().projector)] == [64, 64, 16]  # the paper's 3 layers
    assert [d.units for d in dense(method.predictor)] == [64, 16]
    for head in (method.projector, method.predictor):  # every layer with BN, the output BN without affine
        out_bn = head.layers[-1]
        assert isinstance(out_bn, keras.layers.BatchNormalization) and not out_bn.scale and not out_bn.center
    for k, q in zip(_key_vars(method), method.encoder.weights + method.projector.weights):
        np.testing.assert_array_equal(k.numpy(), q.numpy())
    key_ids = {id(v) for v in _key_vars(method)}
    assert not key_ids & {id(v) for v in method.trainable_variables}
    _perturb_keys(method)
    with tf.GradientTape() as tape:
        loss, _ = method.pretext_loss(_views(method), training=True)
    assert all(g is None for g in tape.gradient(loss, _key_vars(method)))


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_loss_is_the_symmetric_infonce_of_queries_and_keys(t):
    method = _mocov3(temperature=t)
    _perturb_keys(method)
    views = _views(method)
    x = tf.concat([views["view_a"], views["view_b"]], 0)
    q = method.predictor(method.projector(method.encoder(x, training=True), training=True), training=True)
    k = method.key_projector(method.key_encoder(x, training=True), training=True)
    q, k = q.numpy().astype(np.float64), k.numpy().astype(np.float64)
    n = BATCH
    expected = _np_ctr(q[:n], k[n:], t) + _np_ctr(q[n:], k[:n], t)
    loss, _ = method.pretext_loss(views, training=True)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # the positive is the key of the OTHER view: pairing q1 with k1 gives another value
    assert abs(expected - (_np_ctr(q[:n], k[:n], t) + _np_ctr(q[n:], k[n:], t))) > 1e-3


def test_key_momentum_schedule_and_update_after_a_fit_step():
    method = _mocov3(base_momentum=0.9)
    assert float(method.key_momentum()) == pytest.approx(0.9)
    _perturb_keys(method, 0.05)
    method.compile(optimizer=make_optimizer("sgd", 0.05, momentum=0.9))
    method.optimizer.build(method.trainable_variables)
    method.total_steps = 8
    for done, expected in ((0, 0.9), (4, 0.95), (8, 1.0)):
        method.optimizer.iterations.assign(done)
        assert float(method.key_momentum()) == pytest.approx(expected, abs=1e-7)
    method.optimizer.iterations.assign(2)  # progress 1/4: m = 1 - 0.1 (cos(pi/4) + 1) / 2
    m = 1 - 0.1 * (np.cos(np.pi / 4) + 1) / 2
    targets, onlines = _pairs(method)
    old_key = [t.numpy() for t in targets]
    history = method.fit(tf.data.Dataset.from_tensors(_views(method)), epochs=1, verbose=0).history
    assert history["key_momentum"][0] == pytest.approx(m, abs=1e-6)
    for t, o, k0 in zip(targets, onlines, old_key):
        np.testing.assert_allclose(t.numpy(), m * k0 + (1 - m) * o.numpy(), rtol=1e-5, atol=1e-6, err_msg=t.path)


def test_checkpoint_restores_the_key_network_exactly(tmp_path):
    method = _mocov3(base_momentum=0.9)
    method.compile(optimizer=make_optimizer("sgd", 0.05, momentum=0.9), run_eagerly=True)  # no trace needed here
    views = _views(method)
    method.fit(tf.data.Dataset.from_tensors(views).repeat(2), epochs=1, verbose=0)
    method.save_weights(tmp_path / "mocov3.weights.h5")
    keras.utils.set_random_seed(42)
    restored = zoo.create("mocov3", **TINY, base_momentum=0.9)
    restored.load_weights(tmp_path / "mocov3.weights.h5")
    for a, b in zip(_key_vars(restored), _key_vars(method)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(restored.key_encoder.weights[0].numpy(), restored.encoder.weights[0].numpy())
    assert float(restored.pretext_loss(views)[0]) == pytest.approx(float(method.pretext_loss(views)[0]), rel=1e-6)
