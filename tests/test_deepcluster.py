"""DeepCluster v1: PCA whitening and normalisation against numpy, the re-seeding of empty clusters
on hand cases, the loss weights (uniform over pseudo-labels) by hand and the weighted loss against
a numpy cross-entropy, pseudo-labels equal to scikit-learn's k-means of the whitened features,
the head re-initialised after each clustering, NMI against a numpy formula, resume, replicas that
agree, and zoo-train calling the hook and logging the NMIs."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.augment import sobel
from zoo.distribute import replica_disagreement
from zoo.methods.deepcluster import (l2_normalize, nmi, pca_whiten, reseed_empty_clusters,
                                     uniform_cluster_weights)

N = 24
TINY = dict(backbone="resnet18", width=0.125, image_size=32, num_examples=N, num_clusters=4, pca_dim=8,
            embed_batch_size=10)


def _method(**overrides):
    keras.utils.set_random_seed(3)
    return zoo.create("deepcluster", **{**TINY, **overrides})


def _data(n=N):
    data = zoo.data.load_arrays("shapes", "train")
    return data.images[:n], data.labels[:n]


def _head_kernel(method):
    return method.classifier.get_layer("classifier_dense").kernel


# ---- PCA whitening ----------------------------------------------------------------------

def test_pca_whitening_and_normalisation_match_numpy(rng):
    x = rng.normal(size=(60, 10)) @ rng.normal(size=(10, 10)) + 3.0  # correlated, off-centre
    whitened = pca_whiten(x, 6)
    assert whitened.shape == (60, 6)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(6), atol=1e-4)
    # numpy reference: X - mean = U S V^T; the whitened coordinates are U[:, :6] sqrt(n - 1), up
    # to the sign of each component, which the Gram matrix of the normalised rows does not see
    u, _, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    reference = l2_normalize(u[:, :6] * np.sqrt(len(x) - 1))
    ours = l2_normalize(whitened)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ours @ ours.T, reference @ reference.T, atol=1e-4)


def test_pca_dimension_is_capped_by_the_features_and_the_samples(rng):
    assert pca_whiten(rng.normal(size=(50, 10)), 256).shape == (50, 10)   # the feature dimension
    assert pca_whiten(rng.normal(size=(5, 10)), 256).shape == (5, 4)      # n - 1 directions vary
    # a constant feature has no variance: dropped instead of divided by zero
    x = np.concatenate([rng.normal(size=(30, 3)), np.ones((30, 1))], axis=1)
    assert pca_whiten(x, 4).shape == (30, 3) and np.all(np.isfinite(pca_whiten(x, 4)))


# ---- re-seeding empty clusters ------------------------------------------------------------

def test_an_empty_cluster_takes_half_of_the_only_splittable_cluster():
    points = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 2.0], [3.0, 1.0], [3.0, 2.0]])
    labels = np.array([0, 1, 1, 1, 1])                    # cluster 2 empty; cluster 0 has one point
    centroids = np.array([[0.0, 0.0], [2.0, 1.5], [9.0, 9.0]])
    new_labels, new_centroids = reseed_empty_clusters(points, labels, centroids, np.random.default_rng(0))
    e = 1.0 / 1024
    # by hand: c2 = c1 (1 + e, 1 - e), c1 = c1 (1 - e, 1 + e); |p - c2|^2 - |p - c1|^2 = e (7 - 8 x + 6 y),
    # negative (nearer the new centroid) for the two points at x = 3
    np.testing.assert_allclose(new_centroids, [[0, 0], [2 * (1 - e), 1.5 * (1 + e)], [2 * (1 + e), 1.5 * (1 - e)]])
    np.testing.assert_array_equal(new_labels, [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(labels, [0, 1, 1, 1, 1])  # inputs untouched


def test_identical_points_are_split_in_halves_and_every_empty_cluster_is_filled():
    points = np.ones((6, 3))
    labels, centroids = reseed_empty_clusters(points, np.zeros(6, int), np.ones((3, 3)), np.random.default_rng(1))
    assert sorted(np.bincount(labels, minlength=3)) == [1, 2, 3]  # 6 -> 3 + 3, then one 3 -> 1 + 2
    assert np.all(np.isfinite(centroids))


def test_the_split_cluster_is_drawn_proportionally_to_its_size():
    points = np.arange(9, dtype=float)[:, None]
    labels = np.array([0, 1, 1, 2, 2, 2, 2, 2, 2])     # sizes 1 (cannot split), 2 and 6; cluster 3 empty
    centroids = np.array([[0.0], [1.5], [5.5], [20.0]])
    rng = np.random.default_rng(2)
    split = [np.bincount(reseed_empty_clusters(points, labels, centroids, rng)[0], minlength=4)[1] < 2
             for _ in range(2000)]
    assert abs(np.mean(split) - 2 / 8) < 0.03  # the size-2 cluster: 2 of the 8 splittable points


# ---- loss weights and loss -----------------------------------------------------------------

def test_cluster_weights_by_hand():
    labels = np.array([0, 0, 0, 1, 3, 3])       # sizes 3, 1, 0, 2, 0: 3 used clusters, 6 images
    weights = uniform_cluster_weights(labels, 5)
    np.testing.assert_allclose(weights, [6 / 9, 2.0, 0.0, 1.0, 0.0], rtol=1e-6)
    per_image = weights[labels]
    assert per_image.mean() == pytest.approx(1.0)
    # every used cluster carries the same total weight: sampling uniform over pseudo-labels
    np.testing.assert_allclose([per_image[labels == c].sum() for c in (0, 1, 3)], 2.0, rtol=1e-6)


def test_loss_is_the_cluster_weighted_cross_entropy_against_the_pseudo_labels():
    method = _method()
    images, _ = _data()
    assignments = np.arange(N) % 4
    assignments[:6] = 0                                        # unequal clusters
    method.assignments.assign(assignments.astype(np.int32))
    method.cluster_weights.assign(uniform_cluster_weights(assignments, 4))
    ids = np.array([3, 0, 7, 5, 1])
    views = method.make_views(tf.constant(images[ids]), tf.constant(ids), tf.constant([1, 2], tf.int64))
    loss, metrics = method.pretext_loss(views, training=False)
    logits = method.classifier(method.encoder(views["image"])).numpy().astype(np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    targets = assignments[ids]
    sizes = np.bincount(assignments, minlength=4)
    weights = N / (4 * sizes[targets])
    np.testing.assert_allclose(float(loss), np.mean(-weights * log_p[np.arange(len(ids)), targets]), rtol=1e-4)
    assert float(metrics["cluster_accuracy"]) == pytest.approx(np.mean(logits.argmax(1) == targets))


def test_views_are_a_crop_and_flip_and_sobel_filters_them():
    images, _ = _data(8)
    plain, filtered = _method(), _method(sobel=True)
    assert plain.unit_range_views and not filtered.unit_range_views
    seed = tf.constant([4, 5], tf.int64)
    a = plain.make_views(tf.constant(images), tf.constant(np.arange(8)), seed)
    b = filtered.make_views(tf.constant(images), tf.constant(np.arange(8)), seed)
    np.testing.assert_array_equal(a["ids"].numpy(), np.arange(8))
    np.testing.assert_allclose(b["image"].numpy(), sobel(a["image"]).numpy(), atol=1e-6)
    assert not np.allclose(a["image"].numpy(), images / 255.0, atol=0.05)  # augmented, not the image


# ---- clustering between epochs ------------------------------------------------------------

def test_assignments_are_the_kmeans_labels_of_the_whitened_normalised_features():
    from sklearn.cluster import KMeans
    method = _method()
    images, _ = _data()
    method.on_epoch_start(0, images)
    features = method.encoder(tf.constant(images, tf.float32) / 255.0, training=False).numpy()
    np.testing.assert_allclose(method.clustering_features(images), features, atol=1e-5)
    points = l2_normalize(pca_whiten(features, TINY["pca_dim"]))
    reference = KMeans(n_clusters=4, init="random", n_init=1, max_iter=20, random_state=0).fit(points).labels_
    assert len(np.unique(reference)) == 4  # no empty cluster here: the re-seeding left it alone
    np.testing.assert_array_equal(method.assignments.numpy(), reference)
    np.testing.assert_allclose(method.cluster_weights.numpy(), uniform_cluster_weights(reference, 4), rtol=1e-6)
    assert int(method.clustered_epoch.numpy()) == 0


def test_each_clustering_reinitialises_the_head_and_its_optimizer_state():
    method = _method()
    images, _ = _data()
    kernel = _head_kernel(method)
    initial = kernel.numpy().copy()
    method.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), run_eagerly=True)
    views = method.make_views(tf.constant(images[:8]), tf.constant(np.arange(8)), tf.constant([1, 2], tf.int64))
    with pytest.warns(UserWarning, match="epoch_start_callback"):
        method.fit(tf.data.Dataset.from_tensors(views), epochs=1, verbose=0)
    slots = {v.name: v for v in method.optimizer.variables}
    head_slot = slots[kernel.path.replace("/", "_") + "_momentum"]
    encoder_slot = slots[method.encoder.trainable_variables[0].path.replace("/", "_") + "_momentum"]
    assert np.any(head_slot.numpy()) and np.any(encoder_slot.numpy())
    encoder_momentum = encoder_slot.numpy().copy()
    trained = kernel.numpy().copy()

    method.on_epoch_start(0, images)
    first = kernel.numpy().copy()
    assert not np.allclose(first, trained) and not np.allclose(first, initial)
    assert abs(first.mean()) < 0.002 and abs(first.std() - 0.01) < 0.0015  # N(0, 0.01^2): the official init
    np.testing.assert_array_equal(method.classifier.get_layer("classifier_dense").bias.numpy(), 0.0)
    assert not np.any(head_slot.numpy())                          # a new head starts without momentum
    np.testing.assert_array_equal(encoder_slot.numpy(), encoder_momentum)  # the encoder keeps its own
    method.on_epoch_start(1, images)
    assert not np.allclose(kernel.numpy(), first)


def test_a_resumed_epoch_keeps_its_clustering_and_head_and_the_next_epoch_reclusters():
    method = _method()
    images, _ = _data()
    method.on_epoch_start(0, images)
    assignments = method.assignments.numpy().copy()
    trained = _head_kernel(method).numpy() + 0.5  # as if the epoch had trained the head
    _head_kernel(method).assign(trained)
    conv = next(layer for layer in method.encoder.layers if hasattr(layer, "kernel"))
    conv.kernel.assign(conv.kernel * 1.5)  # and the encoder: new features would give a new clustering
    method.on_epoch_start(0, images)  # resumed inside epoch 0: its clustering is in the checkpoint
    np.testing.assert_array_equal(method.assignments.numpy(), assignments)
    np.testing.assert_array_equal(_head_kernel(method).numpy(), trained)
    method.on_epoch_start(1, images)
    assert int(method.clustered_epoch.numpy()) == 1
    assert not np.allclose(_head_kernel(method).numpy(), trained)


def _numpy_nmi(a, b):
    """I(a; b) / sqrt(H(a) H(b)) from the contingency table, in float64."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = np.sum(joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz]))
    entropy = lambda p: -np.sum(p[p > 0] * np.log(p[p > 0]))  # noqa: E731
    return mi / np.sqrt(entropy(pa) * entropy(pb))


def test_nmi_by_hand():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert nmi(a, np.array([5, 5, 3, 3, 4, 4])) == pytest.approx(1.0)   # the same partition, renamed
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)  # independent
    b = np.array([0, 0, 0, 1, 1, 2])
    assert nmi(a, b) == pytest.approx(_numpy_nmi(a, b))


def test_nmi_metrics_against_the_previous_clustering_and_the_labels():
    method = _method()
    images, labels = _data()
    rng = np.random.default_rng(5)
    hand = [rng.integers(0, 4, N), rng.integers(0, 4, N)]
    method.kmeans_assignments = lambda images, epoch: hand[epoch].astype(np.int32)
    method.on_epoch_start(0, images, labels)
    assert float(method.nmi_previous.numpy()) == -1.0
    assert float(method.nmi_labels.numpy()) == pytest.approx(_numpy_nmi(hand[0], labels), abs=1e-6)
    method.on_epoch_start(1, images, labels)
    assert float(method.nmi_previous.numpy()) == pytest.approx(_numpy_nmi(hand[1], hand[0]), abs=1e-6)
    assert float(method.nmi_labels.numpy()) == pytest.approx(_numpy_nmi(hand[1], labels), abs=1e-6)
    views = method.make_views(tf.constant(images[:4]), tf.constant(np.arange(4)), tf.constant([1, 2], tf.int64))
    _, metrics = method.pretext_loss(views)
    assert float(metrics["nmi_previous"]) == pytest.approx(float(method.nmi_previous.numpy()))
    assert float(metrics["nmi_labels"]) == pytest.approx(float(method.nmi_labels.numpy()))
    for missing in (None, np.zeros(N, int)):  # no labels, or one class: nothing to measure
        unlabelled = _method()
        unlabelled.kmeans_assignments = method.kmeans_assignments
        unlabelled.on_epoch_start(0, images, missing)
        assert float(unlabelled.nmi_labels.numpy()) == -1.0


def test_clustering_under_two_replicas_is_the_same_on_both(two_device_strategy):
    images, _ = _data()
    alone = _method()
    alone.on_epoch_start(0, images)
    with two_device_strategy.scope():
        method = _method()
    method.on_epoch_start(0, images)
    assert replica_disagreement(two_device_strategy, lambda: [
        method.assignments.value, method.cluster_weights.value, _head_kernel(method).value]) == 0.0
    np.testing.assert_array_equal(method.assignments.numpy(), alone.assignments.numpy())
    np.testing.assert_array_equal(_head_kernel(method).numpy(), _head_kernel(alone).numpy())


def test_too_few_images_for_the_clusters_or_no_images_is_a_clear_error():
    with pytest.raises(ValueError, match="num_clusters"):
        _method(num_clusters=30).on_epoch_start(0, _data()[0])
    with pytest.raises(ValueError, match="epoch_start_callback"):
        _method().on_epoch_start(0, None)


@pytest.mark.slow  # 15 s: two epochs of zoo-train
def test_zoo_train_clusters_every_epoch_and_logs_the_nmis(tmp_path):
    import yaml
    from trainers import recipes
    from trainers.train import train
    recipe = recipes.load_recipe("deepcluster")
    recipe.update(data="shapes?n=60", epochs=2, batch_size=20, knn_every_epochs=0, checkpoint_every_steps=0)
    recipe["method_config"].update(width=0.125, num_clusters=6, pca_dim=16)
    out = str(tmp_path / "run")
    final = train(recipe, out, verbose=0)
    with open(os.path.join(out, "config.yaml")) as f:
        method = zoo.create("deepcluster", **yaml.safe_load(f)["method_config"])
    method.load_weights(final)
    assert int(method.clustered_epoch.numpy()) == 1  # clustered before each of the 2 epochs
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["nmi_previous"] == -1.0 and 0.0 <= rows[1]["nmi_previous"] <= 1.0
    assert all(0.0 <= r["nmi_labels"] <= 1.0 for r in rows)
    assert "deepcluster: epoch 2 clustering of" in open(os.path.join(out, "train.log")).read()
