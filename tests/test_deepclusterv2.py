"""DeepCluster v2: the between-epoch clustering (banks filled by a forward pass, prototypes and
pseudo-labels from k-means) against numpy, the loss against a numpy cross-entropy, the banks
written after a step, replicas that agree, and zoo-train calling the hook and resuming it."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import zoo
from zoo.distribute import replica_disagreement
from zoo.methods.deepclusterv2 import spherical_assignments

N = 24
TINY = dict(backbone="resnet18", width=0.125, image_size=32, num_examples=N, num_prototypes=(4, 3),
            projection_hidden_dim=16, projection_dim=8, embed_batch_size=10)


def _method(**overrides):
    keras.utils.set_random_seed(3)
    return zoo.create("deepclusterv2", **{**TINY, **overrides})


def _images(n=N):
    return zoo.data.load_arrays("shapes", "train").images[:n]


def _numpy_normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_spherical_assignments_by_hand():
    bank = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    centroids = np.array([[2.0, 0.0], [0.0, 0.5]], np.float32)
    unit, labels = spherical_assignments(bank, centroids)
    np.testing.assert_allclose(unit, [[1, 0], [0, 1]])
    # row 1: 0.6 vs 0.8 -> centroid 1; row 3: -1 vs 0 -> centroid 1 (highest dot product, not nearest mean)
    np.testing.assert_array_equal(labels, [0, 1, 1, 1])


def test_first_epoch_fills_the_banks_and_clusters_them():
    method = _method()
    images = _images()
    method.on_epoch_start(0, images)
    # the banks hold the projection of every un-augmented image, one row per example id
    x = tf.constant(images, tf.float32) / 255.0
    z = method.projector(method.encoder(x, training=False), training=False).numpy()
    for bank in method.banks:
        np.testing.assert_allclose(bank.read().numpy()[:N], _numpy_normalize(z), atol=1e-5)
    assert int(method.clustered_epoch.numpy()) == 0
    bank = method.banks[0].read().numpy()[:N]
    for j, k in enumerate(TINY["num_prototypes"]):
        prototypes = method.prototypes[j].numpy()
        np.testing.assert_allclose(np.linalg.norm(prototypes, axis=1), 1.0, atol=1e-5)
        labels = method.assignments.numpy()[j, :N]
        np.testing.assert_array_equal(labels, np.argmax(bank @ prototypes.T, axis=1))
        assert len(np.unique(labels)) > 1 and labels.max() < k
        # k-means' fixed point: each used prototype is (up to the last Lloyd step) the mean direction
        # of its members, so it is closer to that mean than any other prototype is
        for c in np.unique(labels):
            mean = _numpy_normalize(bank[labels == c].mean(0, keepdims=True))[0]
            assert np.argmax(prototypes @ mean) == c


def test_resumed_epoch_keeps_its_clustering_and_the_next_epoch_reclusters():
    method = _method()
    method.on_epoch_start(0, _images())
    before = method.assignments.numpy().copy()
    for bank in method.banks:  # as if the epoch had run: every row moved
        bank.features.assign(np.roll(bank.read().numpy(), 5, axis=0))
    method.on_epoch_start(0, _images())  # a run resumed inside epoch 0: its clustering is in the checkpoint
    np.testing.assert_array_equal(method.assignments.numpy(), before)
    method.on_epoch_start(1, _images())
    assert int(method.clustered_epoch.numpy()) == 1
    bank = method.banks[0].read().numpy()[:N]
    np.testing.assert_array_equal(method.assignments.numpy()[0, :N],
                                  np.argmax(bank @ method.prototypes[0].numpy().T, axis=1))


def test_loss_is_the_cross_entropy_of_each_crop_against_each_sets_pseudo_label():
    method = _method()
    method.on_epoch_start(0, _images())
    ids = np.array([3, 0, 7, 5])
    views = method.make_views(tf.constant(_images()[ids]), tf.constant(ids), tf.constant([1, 2], tf.int64))
    loss, metrics = method.pretext_loss(views, training=False)
    expected, hits, pairs = 0.0, 0.0, 0
    for j, prototypes in enumerate(method.prototypes):
        targets = method.assignments.numpy()[j, ids]
        for key in ("view_a", "view_b"):
            z = _numpy_normalize(method.projector(method.encoder(views[key])).numpy().astype(np.float64))
            logits = z @ prototypes.numpy().T / 0.1
            log_p = logits - logits.max(1, keepdims=True)
            log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
            expected += -log_p[np.arange(len(ids)), targets].mean()
            hits += (logits.argmax(1) == targets).mean()
            pairs += 1
    np.testing.assert_allclose(float(loss), expected / pairs, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["cluster_accuracy"]), hits / pairs, atol=1e-6)


def test_after_update_writes_each_crops_projections_into_its_bank():
    method = _method()
    ids = np.array([2, 9, 4])
    views = method.make_views(tf.constant(_images()[ids]), tf.constant(ids), tf.constant([4, 5], tf.int64))
    untouched = method.banks[0].read().numpy()[1].copy()
    _, _, aux = method.step_forward(views, training=False)
    with pytest.warns(UserWarning, match="epoch_start_callback"):
        method.after_update(views, aux, tf.constant(True))
    for bank, key in zip(method.banks, ("view_a", "view_b")):
        z = _numpy_normalize(method.projector(method.encoder(views[key])).numpy())
        np.testing.assert_allclose(bank.read().numpy()[ids], z, atol=1e-5)
    np.testing.assert_array_equal(method.banks[0].read().numpy()[1], untouched)


def test_clustering_under_two_replicas_is_the_same_on_both(two_device_strategy):
    alone = _method()
    alone.on_epoch_start(0, _images())
    with two_device_strategy.scope():
        method = _method()
    method.on_epoch_start(0, _images())
    assert replica_disagreement(two_device_strategy,
                                lambda: [method.assignments.value, *[p.value for p in method.prototypes]]) == 0.0
    np.testing.assert_array_equal(method.assignments.numpy(), alone.assignments.numpy())


def test_zoo_train_clusters_every_epoch_and_resumes(tmp_path):
    from trainers import recipes
    from trainers.train import train
    recipe = recipes.load_recipe("deepclusterv2")
    recipe.update(data="shapes?n=60", epochs=2, batch_size=20, knn_every_epochs=0, checkpoint_every_steps=0)
    recipe["method_config"].update(width=0.125, num_prototypes=[6, 5], projection_hidden_dim=32)
    out = str(tmp_path / "run")
    final = train(recipe, out, verbose=0)
    with open(os.path.join(out, "config.yaml")) as f:
        method = zoo.create("deepclusterv2", **yaml.safe_load(f)["method_config"])
    method.load_weights(final)
    assert int(method.clustered_epoch.numpy()) == 1  # clustered before each of the 2 epochs
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["cluster_accuracy"] <= 1 for r in rows)
