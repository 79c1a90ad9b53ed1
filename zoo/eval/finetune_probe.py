"""Low-label fine-tuning: the whole network, encoder and a new linear head, trained on a small
class-balanced part of the labels, against the same network from random init on the same part.

The semi-supervised protocol of SimCLR (Chen et al. 2020, fine-tuning on 1 % and 10 % of the
ImageNet labels) and S4L (Zhai et al. 2019), sized for a CPU. For each label fraction:

  * the subset: zoo.eval.subsets.balanced_subset(train labels, fraction, seed), the same images
    for every encoder (it depends on the labels, the fraction and the seed only);
  * two runs with the same recipe, the same head initialisation, the same batches and the same
    augmentation: one starting from the encoder's weights, one from a random initialisation of
    the same architecture (built from the encoder's config under keras.utils.set_random_seed);
  * the recipe: every backbone layer trainable (zoo.finetune.freeze_stages(encoder, 0)), batch
    norm in training mode, Adam with the learning rate decayed to 0 on a cosine, a fixed number
    of steps for every fraction (so the 1 % subset is seen for ~10x more epochs than the 10 %
    one, as SimCLR's 60 against 30 epochs), batches of `batch_size` images (fewer if the subset
    is smaller) with the standard light augmentation (reflect-pad by 1/8 of the side, random
    crop back, random horizontal flip; zoo.augment.crop_and_flip);
  * the score: top-1 of the fine-tuned network (inference mode) on the whole val split.
"""
import time

import keras
import numpy as np
import tensorflow as tf

from zoo.augment import crop_and_flip
from zoo.eval.features import extract_features
from zoo.eval.subsets import balanced_subset, subset_fingerprint
from zoo.finetune import freeze_stages

DEFAULT_FRACTIONS = (0.01, 0.1)
_LOSS_WINDOW = 10  # the reported train loss is the mean over this many last steps


def _trainable_copy(encoder, pretrained):
    """A copy of `encoder` (an ImageEncoder) with every backbone layer trainable, holding its
    weights (`pretrained=True`) or a fresh random initialisation from the global Keras seed."""
    copy = encoder.__class__.from_config(encoder.get_config())
    if pretrained:
        copy.set_weights(encoder.get_weights())
    freeze_stages(copy, 0)
    return copy


def _check(fractions, steps, batch_size, train_labels, num_classes):
    fractions = list(fractions)
    bad = [f for f in fractions if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1]
    if not fractions or bad or len(set(fractions)) != len(fractions):
        raise ValueError(f"label fractions {fractions}: expected distinct numbers in (0, 1], e.g. 0.01,0.1 for 1 % "
                         "and 10 % of the labels.")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"fine-tuning steps={steps}, batch_size={batch_size}: both must be 1 or more.")
    labels = np.asarray(train_labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"train labels range from {labels.min()} to {labels.max()}; fine-tuning needs class ids "
                         f"0..{num_classes - 1} on every train image (no unlabelled images).")
    return fractions


def finetune_evaluate(encoder, train_images, train_labels, val_images, val_labels, num_classes, *,
                      fractions=DEFAULT_FRACTIONS, steps=300, batch_size=64, learning_rate=1e-3, seed=0,
                      verbose=True):
    """Fine-tune `encoder` (an ImageEncoder, e.g. zoo.load(...) or a run's encoder; it is not
    modified: a copy is trained) and a random-init copy of it on class-balanced subsets of the
    uint8 train images, score both on the val images. Seeds Keras's global random state
    (keras.utils.set_random_seed(seed)) to draw the random initialisation.

    Returns {"subsets": [one entry per fraction: {"fraction", "labelled_images", "subset_sha256",
    "encoder": {"top1", "train_loss", "seconds"}, "random_init": {the same}, "gain" (encoder's
    top-1 minus random init's)}], "steps", "batch_size", "learning_rate", "seed"}; "train_loss" is
    the mean cross-entropy of the last 10 steps (augmented batches, training mode)."""
    fractions = _check(fractions, steps, batch_size, train_labels, num_classes)
    train_images, train_labels = np.asarray(train_images), np.asarray(train_labels, np.int64)
    val_images, val_labels = np.asarray(val_images), np.asarray(val_labels, np.int64)
    keras.utils.set_random_seed(seed)
    network = _trainable_copy(encoder, pretrained=True)
    random_weights = _trainable_copy(encoder, pretrained=False).get_weights()
    head = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed),
                              name="finetune_classifier")
    inputs = keras.Input(train_images.shape[1:], dtype="float32")
    model = keras.Model(inputs, head(network(inputs)))
    starts = {"encoder": network.get_weights(), "random_init": random_weights}
    head_start = head.get_weights()
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))
    optimizer.build(model.trainable_variables)
    optimizer_start = [v.numpy() for v in optimizer.variables]
    padding = max(1, train_images.shape[1] // 8)

    # One trace for every batch size (the subsets of small fractions may be smaller than a batch).
    @tf.function(input_signature=[tf.TensorSpec((None, *train_images.shape[1:]), train_images.dtype),
                                  tf.TensorSpec((None,), tf.int64), tf.TensorSpec((2,), tf.int32)])
    def train_step(images, labels, step_seed):
        x = crop_and_flip(tf.cast(images, tf.float32) / 255.0, step_seed, padding) * 255.0
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    def run(start, subset, batches, name):
        network.set_weights(start)
        head.set_weights(head_start)
        for variable, value in zip(optimizer.variables, optimizer_start):
            variable.assign(value)
        started, losses = time.time(), []
        progress = keras.utils.Progbar(steps, unit_name="step") if verbose else None
        for i, batch in enumerate(batches):
            index = subset[batch]
            losses.append(float(train_step(tf.constant(train_images[index]), tf.constant(train_labels[index]),
                                           tf.constant([seed, i], tf.int32))))
            if progress is not None:
                progress.update(i + 1, [(f"{name} loss", losses[-1])])
        logits = extract_features(model, val_images, batch_size=256, verbose=False,
                                  preprocess=lambda b: b.astype(np.float32))
        return {"top1": float(np.mean(np.argmax(logits, axis=1) == val_labels)),
                "train_loss": float(np.mean(losses[-_LOSS_WINDOW:])), "seconds": round(time.time() - started, 1)}

    results = []
    for fraction in fractions:
        subset = balanced_subset(train_labels, fraction, seed)
        batch = min(batch_size, len(subset))
        # One stream of batches (shuffled passes over the subset, full batches only) for both runs.
        rng, order, batches = np.random.default_rng(seed), np.zeros(0, np.int64), []
        while len(batches) < steps:
            if len(order) < batch:
                order = np.concatenate([order, rng.permutation(len(subset))])
            batches.append(order[:batch])
            order = order[batch:]
        entry = {"fraction": float(fraction), "labelled_images": int(len(subset)),
                 "subset_sha256": subset_fingerprint(subset)}
        for name, start in starts.items():
            if verbose:
                print(f"fine-tuning {name.replace('_', ' ')} on {100 * fraction:g}% of the labels "
                      f"({len(subset)} images, {steps} steps of {batch})")
            entry[name] = run(start, subset, batches, name)
        entry["gain"] = entry["encoder"]["top1"] - entry["random_init"]["top1"]
        results.append(entry)
    return {"subsets": results, "steps": int(steps), "batch_size": int(batch_size),
            "learning_rate": float(learning_rate), "seed": int(seed)}
