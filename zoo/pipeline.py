"""tf.data pipelines that feed a method: uint8 arrays in memory -> batches of pretext views.

The order of images and the augmentation seeds are a pure function of (seed, global step), so
a run resumed from step k sees exactly the batches an uninterrupted run would have seen.
"""
import numpy as np
import tensorflow as tf


def epoch_order(num_images, batch_size, epoch, seed):
    """Image indices of one epoch, [steps, batch_size]; the last partial batch is dropped so
    that every replica always gets an equal share of the global batch."""
    steps = num_images // batch_size
    perm = np.random.default_rng([seed, epoch]).permutation(num_images)
    return perm[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def steps_per_epoch(num_images, batch_size):
    steps = num_images // batch_size
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {num_images} training images; "
                         "use a smaller --batch-size.")
    return steps


def pretext_dataset(method, images, labels, batch_size, epochs, seed=0, start_step=0, end_step=None):
    """Batches of `method.make_views` for global steps [start_step, end_step) of an
    `epochs`-long run over `images` (uint8 [N, H, W, 3]) and `labels` (int [N])."""
    n = len(images)
    spe = steps_per_epoch(n, batch_size)
    end_step = epochs * spe if end_step is None else end_step
    first_epoch, last_epoch = start_step // spe, (end_step - 1) // spe
    order = np.concatenate([epoch_order(n, batch_size, e, seed) for e in range(first_epoch, last_epoch + 1)])
    order = order[start_step - first_epoch * spe: end_step - first_epoch * spe]
    steps = np.arange(start_step, end_step, dtype=np.int32)

    images = tf.constant(images)
    labels = tf.constant(np.asarray(labels, np.int32))

    # Instance methods (NPID, exemplar) see each image's index in `images` instead of its label.
    use_ids = getattr(method, "uses_example_ids", False)

    def views(step, idx):
        batch_seed = tf.stack([tf.constant(seed, tf.int32), step])
        return method.make_views(tf.gather(images, idx), idx if use_ids else tf.gather(labels, idx), batch_seed)

    ds = tf.data.Dataset.from_tensor_slices((steps, order))
    ds = ds.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def image_batches(images, batch_size):
    """Plain float [0, 1] batches of uint8 images, in order (feature extraction, evaluation)."""
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
    return ds.map(lambda x: tf.cast(x, tf.float32) / 255.0).prefetch(tf.data.AUTOTUNE)
