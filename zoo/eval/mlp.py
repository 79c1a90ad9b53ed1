"""MLP probe: a classifier with one hidden layer on frozen features.

The non-linear companion of the linear probe (zoo.eval.linear): same frozen features, same
train / val split, same standardisation (train mean and std), same scores (top-1, top-5 for 10
classes or more, train top-1 and cross-entropy). The classifier is

    logits = relu(x W1 + b1) W2 + b2          (W1: D x hidden, default 512 units)

trained with Adam on mini-batches to minimise mean softmax cross-entropy + weight_decay / 2 *
(||W1||^2 + ||W2||^2), learning rate decayed to 0 on a cosine.

No batch norm: the inputs are already standardised, which is what batch norm would bring to a
single hidden layer, and without it the trained probe is a plain function of its four weight
arrays (no batch statistics, no train / inference difference), which is what it reports and
what `return_params=True` hands back for checking.

Small data: `epochs` passes over the train features, but at least `min_steps` optimiser steps
(a few hundred features in batches of 256 would otherwise get only ~60 steps).
"""
import math

import keras
import numpy as np
import tensorflow as tf

from zoo.eval.linear import DEFAULT_WEIGHT_DECAY, classifier_scores, feature_statistics, standardise

DEFAULT_HIDDEN_UNITS = 512
_SCORE_ROWS = 4096  # rows scored at a time: bounds the [rows, hidden] float64 activations


def _fit(x, y, num_classes, hidden_units, epochs, min_steps, batch_size, learning_rate, weight_decay, seed):
    """Train the MLP on standardised float32 features; returns ({"w1", "b1", "w2", "b2"} as numpy
    arrays, the number of steps taken)."""
    n, d = x.shape
    batch_size = min(int(batch_size), n)
    steps_per_epoch = n // batch_size  # full batches only: one traced step shape
    steps = max(int(epochs) * steps_per_epoch, int(min_steps), 1)
    hidden = keras.layers.Dense(hidden_units, activation="relu", kernel_initializer=keras.initializers.HeNormal(seed))
    output = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed + 1))
    hidden.build((None, d))
    output.build((None, hidden_units))
    variables = hidden.trainable_variables + output.trainable_variables
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))
    optimizer.build(variables)

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = output(hidden(xb))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
            loss += weight_decay / 2 * (tf.reduce_sum(hidden.kernel ** 2) + tf.reduce_sum(output.kernel ** 2))
        optimizer.apply(tape.gradient(loss, variables), variables)

    rng = np.random.default_rng(seed)
    order = np.zeros(0, np.int64)
    for _ in range(steps):
        if len(order) < batch_size:  # a new shuffled pass over the train features
            order = np.concatenate([order, rng.permutation(n)])
        batch, order = order[:batch_size], order[batch_size:]
        step(tf.constant(x[batch]), tf.constant(y[batch]))
    return {"w1": hidden.kernel.numpy(), "b1": hidden.bias.numpy(), "w2": output.kernel.numpy(),
            "b2": output.bias.numpy()}, steps


def _logits(params):
    w1, b1 = params["w1"].astype(np.float64), params["b1"].astype(np.float64)
    w2, b2 = params["w2"].astype(np.float64), params["b2"].astype(np.float64)
    return lambda rows: np.maximum(rows.astype(np.float64) @ w1 + b1, 0.0) @ w2 + b2


def mlp_probe(train_features, train_labels, val_features, val_labels, num_classes, *,
              hidden_units=DEFAULT_HIDDEN_UNITS, epochs=30, min_steps=1000, batch_size=256, learning_rate=1e-3,
              weight_decay=DEFAULT_WEIGHT_DECAY, seed=0, return_params=False):
    """Train a one-hidden-layer ReLU classifier on frozen train features, score it on val features.

    epochs: passes over the train features, raised so that there are at least `min_steps`
        Adam steps of `batch_size` rows (fewer rows than that: one batch of all of them).
    learning_rate: Adam's initial rate, decayed to 0 on a cosine over the steps.
    weight_decay: L2 coefficient on both weight matrices (objective + wd/2 ||W||^2), as the
        linear probe's default.
    seed: the initial weights and the order of the batches; the same seed, the same probe.

    Returns {"top1", "top5" (only when num_classes >= 10), "train_top1", "train_loss" (mean
    train cross-entropy, without the decay term), "hidden_units", "steps", "batch_size",
    "weight_decay"}; with `return_params=True`, (that dict, {"mean", "std", "w1", "b1", "w2",
    "b2"}): the train statistics the features were standardised with and the trained weights.
    """
    train_x = np.asarray(train_features, np.float32)
    train_y = np.asarray(train_labels, np.int64)
    val_x = np.asarray(val_features, np.float32)
    val_y = np.asarray(val_labels, np.int64)
    if train_x.ndim != 2 or len(train_x) == 0 or len(train_x) != len(train_y):
        raise ValueError(f"mlp_probe: train features of shape {train_x.shape} with {len(train_y)} labels; expected "
                         "[N, D] features with N >= 1 and one label per row.")
    if train_y.min() < 0 or train_y.max() >= num_classes:
        raise ValueError(f"mlp_probe: train labels range from {train_y.min()} to {train_y.max()}; expected class ids "
                         f"0..{num_classes - 1} on every train row (leave unlabelled rows out).")
    if hidden_units < 1 or batch_size < 1 or epochs < 0 or min_steps < 0:
        raise ValueError(f"mlp_probe: hidden_units={hidden_units}, batch_size={batch_size}, epochs={epochs}, "
                         f"min_steps={min_steps}; expected hidden_units and batch_size of 1 or more and epochs, "
                         "min_steps of 0 or more.")
    mean, std = feature_statistics(train_x)
    standard_train, standard_val = standardise(train_x, mean, std), standardise(val_x, mean, std)
    params, steps = _fit(standard_train, train_y, num_classes, int(hidden_units), epochs, min_steps, batch_size,
                  float(learning_rate), float(weight_decay), int(seed))
    top1, top5, _ = classifier_scores(_logits(params), standard_val, val_y, _SCORE_ROWS)
    train_top1, _, train_loss = classifier_scores(_logits(params), standard_train, train_y, _SCORE_ROWS)
    result = {"top1": float(top1)}
    if num_classes >= 10:
        result["top5"] = float(top5)
    result.update(train_top1=float(train_top1), train_loss=float(train_loss), hidden_units=int(hidden_units),
                  steps=steps, batch_size=min(int(batch_size), len(train_x)),
                  weight_decay=float(weight_decay))
    if not return_params:
        return result
    return result, dict(params, mean=mean, std=std)
