"""zoo.optimizers against independent references: a numpy LARS written from the paper's
Algorithm 1 (You et al. 2017), keras.optimizers.SGD for excluded variables, hand-computed
schedule values, and single-device training for MirroredStrategy."""
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.optimizers import (
    DEFAULT_EXCLUDE,
    LARS,
    WarmupCosine,
    make_optimizer,
    scale_learning_rate,
)


def _dense_bn_model():
    """Dense(4) -> BatchNormalization on 3 inputs: kernel, bias, gamma, beta."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(4)
    bn = keras.layers.BatchNormalization()
    keras.Model(inputs, bn(dense(inputs)))
    return dense, bn


def _numpy_lars(weights, grads_per_step, lrs, momentum, weight_decay, eta, nesterov, decayed,
                adapted):
    """LARS from the paper: local_lr = lr * eta * ||w|| / ||g + wd w||, classic momentum."""
    weights = [w.astype(np.float64) for w in weights]
    buffers = [np.zeros_like(w) for w in weights]
    for grads, lr in zip(grads_per_step, lrs):
        for i, (w, g) in enumerate(zip(weights, grads)):
            d = g + weight_decay * w if decayed[i] else g
            w_norm, d_norm = np.linalg.norm(w), np.linalg.norm(d)
            trust = eta * w_norm / d_norm if adapted[i] and w_norm > 0 and d_norm > 0 else 1.0
            buffers[i] = momentum * buffers[i] + lr * trust * d
            update = momentum * buffers[i] + lr * trust * d if nesterov else buffers[i]
            weights[i] = w - update
    return weights


def _run(optimizer, variables, grads_per_step):
    for grads in grads_per_step:
        optimizer.apply([tf.constant(g) for g in grads], variables)
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_numpy_reference(rng, nesterov):
    dense, bn = _dense_bn_model()
    variables = [dense.kernel, dense.bias, bn.gamma, bn.beta]
    for v in variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    start = [v.numpy() for v in variables]
    steps = [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(3)]
    # Rates 0.5, 0.2, 0.1 at iterations 0, 1, 2 tell "lr inside the momentum buffer" apart
    # from "lr applied after it".
    lrs = [0.5, 0.2, 0.1]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0, 1], lrs)
    opt = LARS(schedule, momentum=0.9, weight_decay=0.1, eta=0.01, nesterov=nesterov)
    got = _run(opt, variables, steps)
    # Default exclusions: only the kernel is decayed and adapted.
    flags = [True, False, False, False]
    want = _numpy_lars(start, steps, lrs, 0.9, 0.1, 0.01, nesterov, flags, flags)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # The kernel moved by the trust-ratio step, not by lr * g (sanity of the test itself).
    assert np.abs(got[0] - start[0]).max() < 0.1 * np.abs(got[1] - start[1]).max()


def test_lars_separate_decay_and_adaptation_lists(rng):
    dense, bn = _dense_bn_model()
    variables = [dense.kernel, dense.bias, bn.gamma]
    start = [v.numpy() + 0.5 for v in variables]
    for v, w in zip(variables, start):
        v.assign(w)
    steps = [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(3)]
    opt = LARS(0.3, momentum=0.8, weight_decay=0.05, eta=0.1,
               exclude_from_weight_decay=["gamma"], exclude_from_layer_adaptation=["bias"])
    got = _run(opt, variables, steps)
    want = _numpy_lars(start, steps, [0.3] * 3, 0.8, 0.05, 0.1, False,
                       decayed=[True, True, False], adapted=[True, False, True])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_excluded_variables_follow_keras_sgd(rng, nesterov):
    dense, bn = _dense_bn_model()
    excluded = [dense.bias, bn.gamma, bn.beta]
    steps = [[rng.normal(size=v.shape).astype("float32") for v in excluded] for _ in range(3)]
    start = [v.numpy() for v in excluded]
    got = _run(LARS(0.1, momentum=0.9, weight_decay=0.5, eta=0.001, nesterov=nesterov),
               excluded, steps)
    for v, w in zip(excluded, start):
        v.assign(w)
    want = _run(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=nesterov), excluded, steps)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def test_zero_norms_give_trust_ratio_one():
    w = keras.Variable(np.zeros((2, 2), "float32"), name="kernel")
    opt = LARS(0.1, momentum=0.0, weight_decay=0.1, eta=0.001)
    g = np.array([[1.0, -2.0], [0.5, 0.0]], "float32")
    opt.apply([tf.constant(g)], [w])  # ||w|| = 0: plain step lr * g
    np.testing.assert_allclose(w.numpy(), -0.1 * g, rtol=1e-6)
    w.assign(np.ones((2, 2), "float32"))
    opt_no_decay = LARS(0.1, momentum=0.0, eta=0.001)
    opt_no_decay.apply([tf.zeros((2, 2))], [w])  # ||g'|| = 0: no NaN, no move
    np.testing.assert_array_equal(w.numpy(), np.ones((2, 2)))


def test_default_exclusions_match_keras_variable_paths():
    inputs = keras.Input((4, 4, 2))
    conv = keras.layers.Conv2D(3, 1)
    bn = keras.layers.BatchNormalization()
    ln = keras.layers.LayerNormalization()
    dense = keras.layers.Dense(2)
    tricky = keras.layers.Dense(2, name="bias_gamma_beta")  # layer name must not matter
    x = ln(bn(conv(inputs)))
    keras.Model(inputs, tricky(dense(keras.layers.Flatten()(x))))

    def excluded(v):
        return any(re.search(p, v.path) for p in DEFAULT_EXCLUDE)

    want = {id(v) for v in (conv.bias, bn.gamma, bn.beta, ln.gamma, ln.beta, dense.bias,
                            tricky.bias)}
    every = conv.weights + bn.weights + ln.weights + dense.weights + tricky.weights
    assert {id(v) for v in every if excluded(v)} == want, [v.path for v in every]
    assert not excluded(tricky.kernel) and not excluded(bn.moving_mean)


def _regression_data(rng, n):
    x = rng.normal(size=(n, 4)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32") + 1.0
    return x, y


def test_lars_fit_decreases_loss(rng):
    keras.utils.set_random_seed(0)
    x, y = _regression_data(rng, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    lars = LARS(WarmupCosine(0.5, 2, 32), momentum=0.9, weight_decay=1e-4, eta=0.1)
    model.compile(optimizer=lars, loss="mse", jit_compile=True)  # XLA
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=8, verbose=0)  # 32 steps
    assert model.evaluate(x, y, verbose=0) < 0.2 * before


def _small_model():
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.LayerNormalization(),
        keras.layers.Dense(1),
    ])


def _fit_two_steps(initial, x, y):
    model = _small_model()
    model.set_weights(initial)
    model.compile(optimizer=LARS(0.2, momentum=0.9, weight_decay=0.05, eta=0.01), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


def test_mirrored_strategy_matches_single_device(rng, two_device_strategy):
    x, y = _regression_data(rng, 16)  # 2 steps of global batch 8, 4 per replica
    keras.utils.set_random_seed(2)
    initial = _small_model().get_weights()
    single = _fit_two_steps(initial, x, y)
    strategy = two_device_strategy
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = _fit_two_steps(initial, x, y)
    for s, m in zip(single, mirrored):
        np.testing.assert_allclose(m, s, atol=1e-5)
    # The last bias (plain SGD) moved far more than the tolerance: a sum-instead-of-mean
    # gradient would have been caught.
    assert np.abs(single[-1] - initial[-1]).max() > 1e-2


def test_lars_serialization_roundtrip():
    opt = LARS(WarmupCosine(0.3, 5, 50), momentum=0.8, weight_decay=1e-6, eta=0.002,
               nesterov=True, exclude_from_weight_decay=["bias"])
    assert opt.weight_decay == 1e-6
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(clone, LARS) and clone.get_config() == opt.get_config()
    config = opt.get_config()
    assert config["exclude_from_layer_adaptation"] == ["bias"]
    assert config["learning_rate"]["config"]["total_steps"] == 50


def _warmup_cosine_by_hand(t, peak=1.0, warmup=10, total=30, start=0.1, end=0.01):
    if t < warmup:
        return start + (peak - start) * t / warmup
    p = min(1.0, (t - warmup) / (total - warmup))
    return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * p))


def test_warmup_cosine_values_eager_and_graph():
    schedule = WarmupCosine(1.0, 10, 30, start=0.1, end=0.01)
    steps = [0, 5, 10, 15, 20, 30, 45]
    hand = [0.1, 0.55, 1.0, None, 0.505, 0.01, 0.01]
    graph = tf.function(schedule)
    for t, h in zip(steps, hand):
        want = _warmup_cosine_by_hand(t)
        if h is not None:
            assert want == pytest.approx(h)
        assert float(schedule(t)) == pytest.approx(want, rel=1e-6)
        assert float(graph(tf.constant(t, tf.int64))) == pytest.approx(want, rel=1e-6)
    no_warmup = WarmupCosine(2.0, 0, 4)
    assert [float(no_warmup(t)) for t in (0, 2, 4)] == pytest.approx([2.0, 1.0, 0.0], abs=1e-6)
    with pytest.raises(ValueError):
        WarmupCosine(1.0, 10, 5)


def test_make_optimizer_names_and_schedule():
    with pytest.raises(ValueError, match=r"known: adam, adamw, lamb, lars, sgd.*'lars'"):
        make_optimizer("lasr", 0.1)
    with pytest.raises(ValueError, match="total_steps"):
        make_optimizer("sgd", 0.1, warmup_steps=10)
    assert isinstance(make_optimizer("LARS", 0.1), LARS)
    assert isinstance(make_optimizer("adamw", 1e-3, weight_decay=0.05), keras.optimizers.AdamW)
    assert isinstance(make_optimizer("lamb", 1e-3), keras.optimizers.Lamb)
    adam = make_optimizer("adam", 1e-3)
    assert isinstance(adam, keras.optimizers.Adam) and adam.weight_decay is None
    opt = make_optimizer("lars", 0.4, warmup_steps=10, total_steps=100, eta=0.002)
    lr = opt.get_config()["learning_rate"]
    assert lr["class_name"] == "WarmupCosine"
    assert lr["config"] == {"peak": 0.4, "warmup_steps": 10, "total_steps": 100, "start": 0.0,
                            "end": 0.0}
    assert opt.eta == 0.002


def test_make_sgd_uses_coupled_l2_decay_and_momentum(rng):
    dense, _ = _dense_bn_model()
    kernel = dense.kernel
    w0 = kernel.numpy()
    steps = [[rng.normal(size=kernel.shape).astype("float32")] for _ in range(3)]
    got = _run(make_optimizer("sgd", 0.1, weight_decay=0.2, momentum=0.9, nesterov=True),
               [kernel], steps)
    w, v = w0.astype(np.float64), np.zeros_like(w0, np.float64)
    for (g,) in steps:  # PyTorch-style SGD: d = g + wd w; v = m v + d; w -= lr (m v + d)
        d = g + 0.2 * w
        v = 0.9 * v + d
        w = w - 0.1 * (0.9 * v + d)
    np.testing.assert_allclose(got[0], w, rtol=1e-5, atol=1e-6)


def test_scale_learning_rate():
    assert scale_learning_rate(0.3, 4096) == pytest.approx(4.8)
    assert scale_learning_rate(0.1, 512, base_batch=128) == pytest.approx(0.4)
    assert scale_learning_rate(0.075, 4096, rule="sqrt") == pytest.approx(4.8)
    with pytest.raises(ValueError):
        scale_learning_rate(0.1, 256, rule="cubic")
