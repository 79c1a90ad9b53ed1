"""Momentum (EMA) target networks, shared by the methods that keep a slowly moving copy of the
network they train: MoCo's key encoder (He et al. 2020), and later BYOL's target and DINO's
teacher. The design sketch beside the repository (../shared/DESIGN.md, not in it; "The method
contract") calls this the MomentumMixin; it is a handful of functions instead of a mixin, so a
method composes them in its own `build_heads` / `train_step`:

- `copy_weights(target, online)`: the target starts as an exact copy of the online network
  (every weight, including batch-norm moving statistics);
- `freeze(target)`: every VARIABLE of the target is marked non-trainable, so it is not in the
  method's `trainable_variables` (no gradient, no optimizer slot), while its LAYERS stay
  trainable, so that its batch norm still normalises with batch statistics in training mode
  (Keras runs a BatchNormalization whose layer is non-trainable in inference mode, which is
  not what MoCo's key encoder does);
- `momentum_pairs(targets, onlines)`: the (target, online) variable pairs the EMA moves: the
  online network's TRAINABLE weights and the target's weights at the same positions (same
  architecture). Non-trainable state (batch-norm moving statistics) is not averaged: as in
  MoCo's code (which averages `parameters()`, not buffers) the target's own forward passes
  in training mode update its moving statistics;
- `ema_update(target_vars, online_vars, m)`: theta_t <- m * theta_t + (1 - m) * theta_o, the
  update to run right after the optimizer step, outside the gradient tape.

Distribution: `ema_update` works in replica context (inside `strategy.run`, i.e. in a
`train_step` under MirroredStrategy) by a `merge_call` that applies the update to every
replica's copy with `strategy.extended.update`, each copy reading its own replica's copy of
the online weights (identical after the optimizer's all-reduced step), so the mirrored copies
stay identical, like the optimizer's own update. Under the default strategy it is a plain
assign. Inside one `tf.function` automatic control dependencies order it after the
optimizer's writes to the online weights.
"""
import math

import keras
import tensorflow as tf


def _weights(models):
    models = models if isinstance(models, (list, tuple)) else [models]
    return [w for m in models for w in m.weights]


def _check_same_architecture(targets, onlines):
    if len(targets) != len(onlines):
        raise ValueError(f"momentum target has {len(targets)} weights, online network {len(onlines)}: "
                         "build the target with the same architecture.")
    for t, o in zip(targets, onlines):
        if tuple(t.shape) != tuple(o.shape):
            raise ValueError(f"momentum target weight {t.path} {tuple(t.shape)} does not match online weight "
                             f"{o.path} {tuple(o.shape)}.")


def copy_weights(target, online):
    """Assign every weight of `online` (a model or list of models) to `target` (same architecture)."""
    targets, onlines = _weights(target), _weights(online)
    _check_same_architecture(targets, onlines)
    for t, o in zip(targets, onlines):
        t.assign(o)


def freeze(target):
    """Mark every variable of `target` (a model or list of models) non-trainable; the layers stay
    trainable (batch norm keeps using batch statistics when called with training=True)."""
    for w in _weights(target):
        w.trainable = False


def momentum_pairs(target, online):
    """(target variables, online variables): the online network's trainable weights and the
    target's weights at the same positions. Call it when needed (at trace time); do not store
    the lists on a Keras layer (Keras would track the variables a second time)."""
    targets, onlines = _weights(target), _weights(online)
    _check_same_architecture(targets, onlines)
    pairs = [(t, o) for t, o in zip(targets, onlines) if o.trainable]
    return [t for t, _ in pairs], [o for _, o in pairs]


def cosine_schedule(start, end, progress):
    """start -> end along half a cosine as `progress` goes 0 -> 1 (BYOL's target momentum
    0.996 -> 1, DINO's teacher momentum): end - (end - start) * (cos(pi * progress) + 1) / 2."""
    progress = tf.cast(progress, tf.float32)
    return end - (end - start) * (tf.cos(math.pi * progress) + 1.0) / 2.0


def _tf_variable(v):
    return v.value if isinstance(v, keras.Variable) else v


def _ema(target, online, m):
    m = tf.cast(m, target.dtype)
    return target.assign(m * target + (1.0 - m) * tf.cast(online, target.dtype))


def ema_update(target_vars, online_vars, m):
    """target <- m * target + (1 - m) * online for every pair (m: a float or scalar tensor;
    m = 1 leaves the target unchanged). Returns the update ops (graph) or values (eager)."""
    targets, onlines = list(target_vars), list(online_vars)
    _check_same_architecture(targets, onlines)
    targets = [_tf_variable(t) for t in targets]
    onlines = [_tf_variable(o) for o in onlines]

    def update(strategy, m):
        return [strategy.extended.update(t, _ema, args=(o, m), group=False) for t, o in zip(targets, onlines)]

    if tf.distribute.in_cross_replica_context():
        return update(tf.distribute.get_strategy(), m)
    return tf.distribute.get_replica_context().merge_call(update, args=(m,))


__all__ = ["copy_weights", "freeze", "momentum_pairs", "ema_update", "cosine_schedule"]
