"""SimSiam against independent references: the step's loss against numpy on the sub-networks'
outputs, the stop-gradient (no gradient reaches the projector through the target branch: the
loss with z replaced by a constant gives the same gradients), the heads' architecture, and the
constant learning rate of the predictor: after N steps of a known gradient, the predictor
moved by the peak rate at every step while the other variables followed the numpy warm-up +
cosine formula (SGD, Adam, gradient accumulation, 2 replicas)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.optimizers import constant_lr_variables, make_optimizer

TINY = dict(backbone="resnet18", width=0.125, image_size=32, projection_hidden_dim=64, projection_dim=32,
            prediction_hidden_dim=16)
BATCH = 8


def _simsiam(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("simsiam", **{**TINY, **overrides})


def _views(method, seed=(1, 2)):
    images = zoo.data.load_arrays("shapes", "train").images[:BATCH]
    return method.make_views(tf.constant(images), tf.constant(np.arange(BATCH)), tf.constant(seed))


def _np_simsiam(p, z):
    """D(p1, z2) / 2 + D(p2, z1) / 2 in float64 from p, z [2N, D] (views a then b)."""
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    n = len(p) // 2
    d = lambda a, b: -np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))  # noqa: E731
    return 0.5 * d(p[:n], z[n:]) + 0.5 * d(p[n:], z[:n])


def _heads_output(method, views):
    x = tf.concat([views["view_a"], views["view_b"]], 0)
    z = method.projector(method.encoder(x, training=True), training=True)
    return method.predictor(z, training=True), z


def test_heads_follow_the_paper():
    method = _simsiam()
    dense = lambda m: [layer for layer in m.layers if isinstance(layer, keras.layers.Dense)]  # noqa: E731
    bns = lambda m: [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]  # noqa: E731
    assert [d.units for d in dense(method.projector)] == [64, 64, 32]  # 3 layers (ImageNet)
    assert not bns(method.projector)[-1].scale and not bns(method.projector)[-1].center  # output BN, no affine
    assert [d.units for d in dense(method.predictor)] == [16, 32]  # bottleneck
    assert method.predictor.layers[-1] is dense(method.predictor)[-1]  # no BN on the prediction
    assert len(dense(_simsiam(projection_layers=2).projector)) == 2  # CIFAR
    assert method.constant_lr_layers == ("predictor",)
    assert {id(v) for v in constant_lr_variables(method)} == {id(v) for v in method.predictor.trainable_variables}


def test_loss_matches_numpy_and_the_stop_gradient_holds():
    method = _simsiam()
    views = _views(method)
    with tf.GradientTape() as tape:
        loss, _ = method.pretext_loss(views, training=True)
    grads = tape.gradient(loss, method.trainable_variables)
    p, z = _heads_output(method, views)
    assert float(loss) == pytest.approx(_np_simsiam(p, z), rel=1e-5)
    # The same loss with the targets as constants: identical gradients, so nothing flowed
    # through z2 / z1 on the target side.
    z_const = tf.constant(z.numpy())
    with tf.GradientTape() as tape:
        p, _ = _heads_output(method, views)
        n = BATCH
        ref = zoo.losses.simsiam_loss(p[:n], p[n:], z_const[:n], z_const[n:])
    ref_grads = tape.gradient(ref, method.trainable_variables)
    for v, g, r in zip(method.trainable_variables, grads, ref_grads):
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(r).numpy(),
                                   rtol=1e-4, atol=1e-7, err_msg=v.path)
    # and a loss without the stop-gradient differs: its projector gradient has the target term
    with tf.GradientTape() as tape:
        p, z = _heads_output(method, views)
        unit = lambda x: tf.math.l2_normalize(x, 1)  # noqa: E731
        cos = lambda a, b: tf.reduce_mean(tf.reduce_sum(unit(a) * unit(b), 1))  # noqa: E731
        no_stop = -0.5 * cos(p[:BATCH], z[BATCH:]) - 0.5 * cos(p[BATCH:], z[:BATCH])
    no_stop_grads = tape.gradient(no_stop, method.projector.trainable_variables)
    grads_by_variable = {id(v): g for v, g in zip(method.trainable_variables, grads)}
    projector_grads = [grads_by_variable[id(v)] for v in method.projector.trainable_variables]
    assert any(not np.allclose(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy(), atol=1e-6)
               for a, b in zip(projector_grads, no_stop_grads))


# --- the predictor's constant learning rate (zoo.optimizers) -----------------------------------

PEAK, WARMUP, TOTAL = 0.1, 2, 8


def _np_warmup_cosine(step):
    """The schedule the other variables follow (WarmupCosine's docstring), in numpy."""
    if step < WARMUP:
        return PEAK * step / WARMUP
    return PEAK * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - WARMUP) / (TOTAL - WARMUP))))


def _two_layers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    body, head = keras.layers.Dense(4, name="body"), keras.layers.Dense(2, name="head")
    keras.Model(inputs, head(body(inputs)))
    return body, head


def _steps_taken(optimizer, body, head, steps, apply=None):
    """Apply the gradient 1 to every weight `steps` times; per step, how far body and head moved."""
    variables = body.trainable_variables + head.trainable_variables
    grads = [tf.ones_like(v) for v in variables]
    apply = apply or (lambda: optimizer.apply(grads, variables))
    moved = []
    for _ in range(steps):
        before = [v.numpy() for v in variables]
        apply()
        delta = [b - v.numpy() for v, b in zip(variables, before)]
        moved.append((float(np.mean(delta[0])), float(np.mean(delta[-1]))))
        for d in delta[:2]:
            np.testing.assert_allclose(d, d.flat[0], rtol=1e-5)  # every entry alike
    return moved


def test_constant_lr_variables_keep_the_peak_rate_while_the_others_follow_the_schedule():
    body, head = _two_layers()
    optimizer = make_optimizer("sgd", PEAK, momentum=0.0, warmup_steps=WARMUP, total_steps=TOTAL,
                               constant_lr_variables=head.trainable_variables)
    for step, (body_step, head_step) in enumerate(_steps_taken(optimizer, body, head, TOTAL + 1)):
        assert body_step == pytest.approx(_np_warmup_cosine(step), abs=1e-7), step
        assert head_step == pytest.approx(PEAK, rel=1e-6), step
    # without constant_lr_variables both follow the schedule
    body, head = _two_layers()
    plain = make_optimizer("sgd", PEAK, momentum=0.0, warmup_steps=WARMUP, total_steps=TOTAL)
    for step, (body_step, head_step) in enumerate(_steps_taken(plain, body, head, 4)):
        assert head_step == pytest.approx(_np_warmup_cosine(step), abs=1e-7) == body_step


def test_constant_lr_with_adam_and_gradient_accumulation():
    # Adam with a constant gradient moves every weight by ~lr per step (m_hat / sqrt(v_hat) = 1)
    body, head = _two_layers()
    adam = make_optimizer("adam", PEAK, warmup_steps=WARMUP, total_steps=TOTAL, constant_lr_variables=head.weights)
    for step, (body_step, head_step) in enumerate(_steps_taken(adam, body, head, 5)):
        assert body_step == pytest.approx(_np_warmup_cosine(step), rel=1e-4, abs=1e-7)
        assert head_step == pytest.approx(PEAK, rel=1e-4)
    # accumulation: an update every 2nd batch; the schedule is evaluated at the batch count
    body, head = _two_layers()
    accumulating = make_optimizer("sgd", PEAK, momentum=0.0, warmup_steps=WARMUP, total_steps=TOTAL,
                                  accumulate_steps=2, constant_lr_variables=head.weights)
    moved = _steps_taken(accumulating, body, head, 6)
    assert [m[1] for m in moved] == pytest.approx([0, PEAK, 0, PEAK, 0, PEAK], abs=1e-7)
    assert [m[0] for m in moved] == pytest.approx([0, _np_warmup_cosine(1), 0, _np_warmup_cosine(3), 0,
                                                   _np_warmup_cosine(5)], abs=1e-7)


def test_constant_lr_on_two_replicas(two_device_strategy):
    strategy = two_device_strategy
    with strategy.scope():
        body, head = _two_layers()
        optimizer = make_optimizer("sgd", PEAK, momentum=0.0, warmup_steps=WARMUP, total_steps=TOTAL,
                                   constant_lr_variables=head.trainable_variables)
        variables = body.trainable_variables + head.trainable_variables
        optimizer.build(variables)

    @tf.function
    def step():
        def replica_fn():  # each replica contributes half of the gradient 1 (all-reduced sum)
            optimizer.apply([0.5 * tf.ones_like(v) for v in variables], variables)
        strategy.run(replica_fn)

    for s, (body_step, head_step) in enumerate(_steps_taken(optimizer, body, head, 4, apply=step)):
        assert body_step == pytest.approx(_np_warmup_cosine(s), abs=1e-7)
        assert head_step == pytest.approx(PEAK, rel=1e-6)


def test_simsiam_fit_keeps_the_predictor_rate():
    """In a fit with a schedule that is 0 at the first step (warm-up), only the predictor moves."""
    method = _simsiam()
    method.compile(optimizer=make_optimizer("sgd", 0.05, momentum=0.9, warmup_steps=5, total_steps=10,
                                            constant_lr_variables=constant_lr_variables(method)))
    before = {id(v): v.numpy() for v in method.trainable_variables}
    method.fit(tf.data.Dataset.from_tensors(_views(method)), epochs=1, verbose=0)
    moved = {id(v) for v in method.trainable_variables if not np.array_equal(v.numpy(), before[id(v)])}
    assert moved == {id(v) for v in method.predictor.trainable_variables}
