"""The shared harness: every registered method goes through the same checks, at tiny width.

A new method passes if it builds, its views are well-formed, a fit step gives finite losses
that change, every trainable variable gets a gradient, a checkpoint round trip reproduces the
loss, and the loss and gradients on 2 replicas equal those on one device for the same global
batch (with synchronised batch norm, since per-replica BN differs by design).
"""
import contextlib

import numpy as np
import pytest
import tensorflow as tf
import keras

import zoo
from zoo.distribute import global_loss_and_gradients
from zoo.optimizers import make_optimizer
from selection import slow_except, tiny_backbone

METHODS = zoo.list_methods()


def tiny(name):
    """Tiny settings of a method: ResNet-18 at width 0.125, or the tiny ViT for methods that need
    tokens (MAE)."""
    return dict(backbone=tiny_backbone(name), width=0.125, image_size=32)

BATCH = 8


def _images():
    data = zoo.data.load_arrays("shapes", "train")
    return data.images[:BATCH], data.labels[:BATCH]


def _method(name, **overrides):
    keras.utils.set_random_seed(1)
    return zoo.create(name, **{**tiny(name), **overrides})


def _views(method):
    images, labels = _images()
    return method.make_views(tf.constant(images), tf.constant(labels), tf.constant([3, 4]))


def _sgd():
    return make_optimizer("sgd", 0.05, momentum=0.9)


def test_required_methods_are_registered():
    assert {"simclr", "rotation"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_views_are_deterministic_and_well_formed(name):
    method = _method(name)
    a, b = _views(method), _views(method)
    assert set(a) == set(b) and a
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
        assert np.all(np.isfinite(a[key].numpy().astype(np.float64)))
        if a[key].dtype.is_floating and a[key].shape.rank in (4, 5):  # images [B,h,w,3] or [B,k,h,w,3]
            h, w, c = a[key].shape[-3:]
            assert c == 3 and 4 <= h <= 32 and 4 <= w <= 32, (key, a[key].shape)
            if method.unit_range_views:
                assert 0.0 <= float(tf.reduce_min(a[key])) and float(tf.reduce_max(a[key])) <= 1.0
        assert a[key].shape[0] % BATCH == 0, f"{key}: the first axis must be the batch axis"
    images, labels = _images()
    other = method.make_views(tf.constant(images), tf.constant(labels), tf.constant([5, 6]))
    assert any(not np.array_equal(a[k].numpy(), other[k].numpy()) for k in a if a[k].dtype.is_floating)


@pytest.mark.parametrize("name", METHODS)
def test_every_trainable_variable_gets_a_gradient(name):
    method = _method(name)
    views = _views(method)
    with tf.GradientTape() as tape:
        loss, metrics = method.pretext_loss(views, training=True)
    grads = tape.gradient(loss, method.trainable_variables)
    assert np.isfinite(float(loss))
    missing = [v.path for v, g in zip(method.trainable_variables, grads)
               if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    assert not missing, f"variables without gradient: {missing}"
    assert set(metrics) == set(method.metric_names)


# Eagerly by default (the same train_step, 2.5x faster without the trace); traced as
# `zoo-train` runs it for simclr in test_fit_on_plain_image_batches_makes_views_in_the_step, in
# each method's own test file where the order of reads and writes in the graph matters (queues,
# memory banks, momentum targets), and for every method under -m slow.
FIT_CASES = [pytest.param(name, True, id=f"{name}-eager") for name in METHODS] + [
    pytest.param(name, False, id=f"{name}-graph", marks=pytest.mark.slow) for name in METHODS]


@pytest.mark.parametrize("name,run_eagerly", FIT_CASES)
def test_fit_steps_change_the_loss_and_a_checkpoint_reproduces_it(name, run_eagerly, tmp_path):
    """Three fit steps: finite logs and weights, the loss moves; the weights file then restores
    the loss exactly into a model with other initial weights, and the optimizer's step count."""
    method = _method(name)
    method.compile(optimizer=_sgd(), run_eagerly=run_eagerly)
    views = _views(method)
    before = float(method.pretext_loss(views, training=False)[0])
    history = method.fit(tf.data.Dataset.from_tensors(views).repeat(3), epochs=1, verbose=0)
    expected = float(method.pretext_loss(views, training=False)[0])
    assert all(np.isfinite(v) for values in history.history.values() for v in values)
    assert np.all([np.all(np.isfinite(w)) for w in method.get_weights()])
    assert abs(expected - before) > 1e-4

    method.save_weights(tmp_path / "m.weights.h5")
    keras.utils.set_random_seed(99)  # different initial weights
    restored = zoo.create(name, **tiny(name))
    assert abs(float(restored.pretext_loss(views, training=False)[0]) - expected) > 1e-6
    restored.compile(optimizer=_sgd())
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(tmp_path / "m.weights.h5")
    assert float(restored.pretext_loss(views, training=False)[0]) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert int(restored.optimizer.iterations.numpy()) == 3


@contextlib.contextmanager
def _global_policy(policy):
    """Every layer built inside computes (and keeps its weights) as `policy` says."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.fixture
def float64_policy():
    with _global_policy("float64"):
        yield


# 10-30 s per method in float64: by default the methods whose loss mixes the samples of the
# global batch in their own way (cross-replica negatives, queue + shuffle-BN, batch
# cross-correlation, Sinkhorn over the batch) and counting, whose float32 check failed on the
# AVX2 machines; every method under -m slow. (The other losses are per-sample given the batch
# norm, which the sync-BN of these cases covers.)
_TWO_REPLICA_KEEP = ("simclr", "moco", "barlow_twins", "swav", "counting")


@pytest.mark.parametrize("name", slow_except(METHODS, keep=_TWO_REPLICA_KEEP))
def test_two_replicas_compute_the_same_loss_and_gradients_as_one_device(name, two_device_strategy, float64_policy):
    """Same global batch, same weights: the loss and every gradient on 2 replicas equal one
    device's. In float64, because the point is that the two are the same computation: in float32
    the kernels of each CPU kind sum in their own order (Eigen blocks by cache size), which moved
    counting's stem gradient by 3e-3 of its size on the AVX2 machines. In float64 (the losses
    still round their own arithmetic to float32) the largest difference measured 5e-7 of a
    gradient's size; a loss that uses per-replica statistics or the wrong replica count is off
    by 1e-2 or more. Gradients are compared relative to the larger of their own size and 1e-6
    of the largest gradient of the model, since some are zero up to round-off (a bias followed
    by batch norm)."""
    single = _method(name, sync_bn=True)
    views = _views(single)
    with tf.GradientTape() as tape:
        loss, _ = single.pretext_loss(views, training=True)
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, single.trainable_variables)]

    strategy = two_device_strategy
    with strategy.scope():
        mirrored = _method(name, sync_bn=True)
    assert mirrored.encoder.compute_dtype == "float64"
    mirrored.set_weights(single.get_weights())
    dist_loss, dist_grads = global_loss_and_gradients(strategy, mirrored, views)
    np.testing.assert_allclose(float(dist_loss), float(loss), rtol=1e-5)
    largest = max(np.abs(g).max() for g in grads)
    for v, g1, g2 in zip(single.trainable_variables, grads, dist_grads):
        scale = max(np.abs(g1).max(), 1e-6 * largest, 1e-12)
        assert np.abs(g1 - g2.numpy()).max() / scale < 1e-5, v.path


# By default simclr (the generic train_step's loss scaling and update); the one-step loss and
# gradient check above covers the methods' losses, test_moco the queue under 2 replicas.
@pytest.mark.parametrize("name", slow_except(METHODS, keep=("simclr",)))
def test_fit_under_mirrored_strategy_matches_one_device(name, two_device_strategy, float64_policy):
    """A fit step on 2 replicas moves every weight as a step on one device does (compared on the
    updates, relative to their size: a loss scaled by the wrong replica count fails). In float64,
    as the gradient check above: in float32 the sync-BN round-off on 4 images per replica moved
    the updates of 8 methods by 0.25-0.55 % of their size (counting, barlow_twins, byol, mocov3,
    nnclr, simsiam, swav, vicreg), above this bound, without any difference in the computation."""
    views, initial, updates, losses = None, None, {}, {}
    for strategy in (tf.distribute.get_strategy(), two_device_strategy):
        with strategy.scope():
            method = _method(name, sync_bn=True)
            method.compile(optimizer=_sgd())
        views = views if views is not None else _views(method)
        initial = initial if initial is not None else method.get_weights()
        method.set_weights(initial)
        history = method.fit(tf.data.Dataset.from_tensors(views), epochs=1, verbose=0)
        n = strategy.num_replicas_in_sync
        updates[n] = [w - w0 for w, w0 in zip(method.get_weights(), initial)]
        losses[n] = history.history["loss"][-1]
    moved = 0
    for d1, d2 in zip(updates[1], updates[2]):
        size = np.abs(d1).max()
        moved += size > 0
        assert np.abs(d1 - d2).max() <= 2e-3 * size + 1e-7
    assert moved > len(updates[1]) // 2
    assert losses[1] == pytest.approx(losses[2], rel=1e-5)


# The base class's path (views made inside the step) is the same for every method, and every
# method's make_views runs in a graph in test_pipeline_batches_have_static_shapes: one here.
@pytest.mark.parametrize("name", slow_except(METHODS, keep=("simclr",)))
def test_fit_on_plain_image_batches_makes_views_in_the_step(name):
    method = _method(name)
    method.compile(optimizer=_sgd())
    data = zoo.data.load("shapes?n=300", "train").batch(50, drop_remainder=True)
    history = method.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert int(method.optimizer.iterations.numpy()) == 250 // 50
    assert np.isfinite(method.evaluate(data.take(1), verbose=0, return_dict=True)["loss"])


# --- speed switches and TPU-compatibility: XLA, mixed precision, static shapes ---------------

@pytest.mark.parametrize("name", METHODS)
def test_pipeline_batches_have_static_shapes(name):
    """Every tensor of a pipeline batch has a fully known shape (XLA and TPUs need them)."""
    from zoo.pipeline import pretext_dataset
    method = _method(name)
    images, labels = _images()
    spec = pretext_dataset(method, images, labels, BATCH, 1).element_spec
    assert spec and all(s.shape.is_fully_defined() for s in spec.values()), spec


# ~5 s per method on the fast machine kind: by default a method with cross-replica negatives
# and one with a queue, Sinkhorn's loop and multi-crop; every method under -m slow.
@pytest.mark.parametrize("name", slow_except(METHODS, keep=("simclr", "swav")))
def test_train_step_lowers_to_xla(name):
    """The whole train step (views in, loss, gradients, optimizer update, metrics) lowers to XLA
    HLO: no py_function, no string op, no op without an XLA kernel, no shape XLA rejects, i.e.
    the step `--jit-compile` and TPUs need. (Lowering, without XLA's code generation: ~7 s per
    method here; test_fit_with_jit_compile, marked slow, compiles and runs it: ~40 s.)"""
    method = _method(name)
    method.compile(optimizer=_sgd())
    method.optimizer.build(method.trainable_variables)
    step = tf.function(method.train_step, jit_compile=True)
    hlo = step.experimental_get_compiler_ir(_views(method))(stage="hlo")
    assert "ENTRY" in hlo


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_fit_with_jit_compile(name):
    """compile(jit_compile=True) (zoo-train --jit-compile): two fit steps, finite, weights move."""
    method = _method(name)
    method.compile(optimizer=_sgd(), jit_compile=True)
    views = _views(method)
    before = method.get_weights()
    history = method.fit(tf.data.Dataset.from_tensors(views).repeat(2), epochs=1, verbose=0)
    assert method.jit_compile is True  # Keras falls back silently when a layer does not support XLA
    assert np.isfinite(history.history["loss"][-1])
    assert any(np.abs(w - w0).max() > 0 for w, w0 in zip(method.get_weights(), before))


@pytest.fixture
def mixed_policy(request):
    """The global dtype policy named by the test's `policy` parameter, restored afterwards."""
    with _global_policy(request.node.callspec.params["policy"]) as policy:
        yield policy


# Fit steps under mixed precision by default for a method with cross-replica negatives, one with
# a queue, a momentum target, Sinkhorn (bfloat16) and for simclr under mixed_float16 (the GPU
# path: loss scaling in the generic train_step, the same for every method); every method under
# -m slow. Every method's loss is checked under mixed_bfloat16 in
# test_loss_is_float32_under_mixed_bfloat16. (bfloat16 runs 6.5x slower on CPUs without it.)
_MIXED_KEEP = {"mixed_bfloat16": ("simclr", "moco", "byol", "swav"), "mixed_float16": ("simclr",)}
MIXED_CASES = [pytest.param(name, policy, id=f"{name}-{policy}",
                            marks=() if name in keep else pytest.mark.slow)
               for policy, keep in _MIXED_KEEP.items() for name in METHODS]


@pytest.fixture
def bfloat16_policy():
    with _global_policy("mixed_bfloat16"):
        yield


@pytest.mark.parametrize("name", METHODS)
def test_loss_is_float32_under_mixed_bfloat16(name, bfloat16_policy):
    """The network computes in bfloat16 and the loss and its gradients come out finite, the loss
    in float32 (a loss that mixes the two dtypes fails here)."""
    method = _method(name)
    assert method.encoder.compute_dtype == "bfloat16"
    with tf.GradientTape() as tape:
        loss, _ = method.pretext_loss(_views(method), training=True)
    assert loss.dtype == tf.float32 and np.isfinite(float(loss))
    grads = tape.gradient(loss, method.trainable_variables)
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads if g is not None)


@pytest.mark.parametrize("name,policy", MIXED_CASES)
def test_fit_under_mixed_precision(name, policy, mixed_policy):
    """mixed_bfloat16 (CPUs, TPUs) and mixed_float16 (GPUs: Keras wraps the optimizer in a
    LossScaleOptimizer and the generic train_step scales the loss): the network computes in 16
    bits, the loss comes out in float32, and fit steps are finite and move the float32 weights.
    (Run eagerly: the same train_step, without a slow trace.)"""
    low = mixed_policy.split("_")[1]
    method = _method(name)
    assert method.encoder.compute_dtype == low
    views = _views(method)
    loss, _ = method.pretext_loss(views, training=True)
    assert loss.dtype == tf.float32 and np.isfinite(float(loss))
    method.compile(optimizer=_sgd(), run_eagerly=True)
    before = method.get_weights()
    history = method.fit(tf.data.Dataset.from_tensors(views).repeat(2), epochs=1, verbose=0)
    assert isinstance(method.optimizer, keras.optimizers.LossScaleOptimizer) == (low == "float16")
    assert np.isfinite(history.history["loss"][-1])
    assert all(v.dtype == "float32" for v in method.trainable_variables)
    assert any(np.abs(w - w0).max() > 0 for w, w0 in zip(method.get_weights(), before))
