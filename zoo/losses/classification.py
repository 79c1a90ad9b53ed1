"""Softmax classification with integer labels: the mean cross-entropy and the top-1 accuracy
that pretext classifiers (rotation, jigsaw, ...) and every InfoNCE-style loss end in (their
logits classify the positive among the negatives)."""
import tensorflow as tf


def cross_entropy(labels, logits):
    """Mean softmax cross-entropy with integer labels (pretext classification tasks)."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int32), tf.cast(logits, tf.float32)))


def accuracy(labels, logits):
    """Top-1 accuracy of integer labels against logits."""
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(pred, tf.cast(labels, tf.int32)), tf.float32))


__all__ = ["cross_entropy", "accuracy"]
