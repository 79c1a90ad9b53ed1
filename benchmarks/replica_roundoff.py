"""How far the loss and gradients of 2 replicas are from one device's, per method, for the same
global batch and weights (synchronised BN): the numbers behind the bound of
tests/test_methods.py::test_two_replicas_compute_the_same_loss_and_gradients_as_one_device.

    python benchmarks/replica_roundoff.py float64 [METHOD ...] > benchmarks/results/replica_roundoff_float64.txt
    python benchmarks/replica_roundoff.py float32 [METHOD ...]

Prints, per method, the loss's relative difference and the largest relative gradient
difference (max |g1 - g2| / max |g1| per variable) with the variable it occurs at.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import zoo  # noqa: E402  (environment defaults before TensorFlow)
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.distribute import global_loss_and_gradients  # noqa: E402

TINY = dict(backbone="resnet18", width=0.125, image_size=32, sync_bn=True)


def main(policy, names):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = zoo.data.load_arrays("shapes", "train")
    keras.config.set_dtype_policy(policy)
    for name in names or zoo.list_methods():
        keras.utils.set_random_seed(1)
        single = zoo.create(name, **TINY)
        views = single.make_views(tf.constant(data.images[:8]), tf.constant(data.labels[:8]), tf.constant([3, 4]))
        with tf.GradientTape() as tape:
            loss, _ = single.pretext_loss(views, training=True)
        grads = tape.gradient(loss, single.trainable_variables)
        with strategy.scope():
            mirrored = zoo.create(name, **TINY)
        mirrored.set_weights(single.get_weights())
        dist_loss, dist_grads = global_loss_and_gradients(strategy, mirrored, views)
        worst, where = 0.0, None
        for v, g1, g2 in zip(single.trainable_variables, grads, dist_grads):
            g1 = tf.convert_to_tensor(g1).numpy()
            r = np.abs(g1 - g2.numpy()).max() / max(np.abs(g1).max(), 1e-12)
            if r > worst:
                worst, where = r, v.path
        print(f"{policy} {name}: loss rel {abs(float(dist_loss) - float(loss)) / abs(float(loss)):.2e}, "
              f"worst gradient rel {worst:.2e} at {where}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "float64", sys.argv[2:])
