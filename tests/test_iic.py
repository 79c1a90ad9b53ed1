"""IIC (zoo.losses.clustering.iic_*, zoo.methods.iic) against independent references: the mutual
information of the symmetrised joint written out with loops in numpy (float64), hand-made
assignments whose mutual information is known in closed form (log k, log k/2, 0), central
differences for the gradient, 2 replicas against one device (the joint must be the global
batch's), and a numpy Sobel filter with explicit zero padding."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.augment import sobel
from zoo.distribute import distribute_views
from zoo.losses.clustering import iic_joint, iic_loss, iic_mutual_information
from numerics import central_differences

EPS = 2.220446049250313e-16  # sys.float_info.epsilon, the official code's clip


# ---- references ---------------------------------------------------------------------------

def _np_mutual_information(p_a, p_b, eps=EPS):
    """I(z, z') from the definition, float64: joint P[i, j] = mean over samples of p_a[n, i] *
    p_b[n, j], symmetrised, marginals by summing P's rows and columns, every probability clipped
    below at eps before its log (the official IID_losses.py)."""
    p_a, p_b = np.asarray(p_a, np.float64), np.asarray(p_b, np.float64)
    n, k = p_a.shape
    joint = np.zeros((k, k))
    for s in range(n):
        for i in range(k):
            for j in range(k):
                joint[i, j] += p_a[s, i] * p_b[s, j] / n
    joint = (joint + joint.T) / 2
    rows, cols = joint.sum(axis=1), joint.sum(axis=0)
    clip = lambda x: max(x, eps)  # noqa: E731
    return sum(joint[i, j] * (math.log(clip(joint[i, j])) - math.log(clip(rows[i])) - math.log(clip(cols[j])))
               for i in range(k) for j in range(k))


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _pair(rng, n=12, k=4):
    """Soft assignments of n images and of their copies that partly agree."""
    logits = 2.0 * rng.normal(size=(n, k))
    return _softmax(logits).astype(np.float32), _softmax(logits + rng.normal(size=(n, k))).astype(np.float32)


def _one_hot(ids, k):
    return np.eye(k, dtype=np.float32)[ids]


# ---- the loss -----------------------------------------------------------------------------

@pytest.mark.parametrize("n, k", [(12, 4), (7, 10), (30, 3)])
def test_mutual_information_matches_numpy(rng, n, k):
    p_a, p_b = _pair(rng, n, k)
    expected = _np_mutual_information(p_a, p_b)
    assert expected > 0.05
    assert float(iic_mutual_information(p_a, p_b)) == pytest.approx(expected, rel=1e-5)
    assert float(iic_loss(p_a, p_b)) == pytest.approx(-expected, rel=1e-5)
    joint = iic_joint(p_a, p_b).numpy()
    np.testing.assert_allclose(joint, joint.T, atol=1e-7)
    assert joint.sum() == pytest.approx(1.0, abs=1e-6)
    # float64 inputs are computed in float64 (the harness's float64 replica checks need it)
    mi64 = iic_mutual_information(p_a.astype(np.float64), p_b.astype(np.float64))
    assert mi64.dtype == tf.float64 and float(mi64) == pytest.approx(_np_mutual_information(p_a, p_b), rel=1e-12)


def test_sub_heads_are_separate_joints_and_the_loss_is_their_mean(rng):
    heads = [_pair(rng, 10, 5) for _ in range(3)]
    p_a = np.stack([a for a, _ in heads], axis=1)  # [n, sub-heads, k]
    p_b = np.stack([b for _, b in heads], axis=1)
    expected = [_np_mutual_information(a, b) for a, b in heads]
    np.testing.assert_allclose(iic_mutual_information(p_a, p_b).numpy(), expected, rtol=1e-5)
    assert float(iic_loss(p_a, p_b)) == pytest.approx(-np.mean(expected), rel=1e-5)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_hand_made_cases(k):
    clusters = np.arange(4 * k) % k  # every cluster equally often
    confident = _one_hot(clusters, k)
    # confident, uniform over the k clusters and agreeing: I = H(z) = log k
    assert float(iic_mutual_information(confident, confident)) == pytest.approx(math.log(k), rel=1e-6)
    # the copy always in the next cluster: the symmetrised joint puts 1/(2k) on (c, c+1) and
    # (c+1, c), so I = log(k/2) for k > 2 (for k = 2 the two cells coincide: log 2)
    shifted = _one_hot((clusters + 1) % k, k)
    expected = math.log(k / 2) if k > 2 else math.log(2)
    assert float(iic_mutual_information(confident, shifted)) == pytest.approx(expected, abs=1e-6)
    # independent: the copy's cluster runs through all k for each cluster of the image -> P = 1/k^2
    grid = np.arange(k * k)
    independent = float(iic_mutual_information(_one_hot(grid % k, k), _one_hot(grid // k, k)))
    assert independent == pytest.approx(0.0, abs=1e-6)
    # uninformative soft assignments, and everything in one cluster (H(z) = 0): I = 0
    uniform = np.full((6, k), 1.0 / k, np.float32)
    assert float(iic_mutual_information(uniform, uniform)) == pytest.approx(0.0, abs=1e-6)
    collapsed = _one_hot(np.zeros(6, int), k)
    assert float(iic_mutual_information(collapsed, collapsed)) == pytest.approx(0.0, abs=1e-6)


def test_gradient_matches_central_differences(rng):
    logits_a, logits_b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    a, b = tf.constant(logits_a, tf.float32), tf.constant(logits_b, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss = iic_loss(tf.nn.softmax(a), tf.nn.softmax(b))
    grad_a, grad_b = tape.gradient(loss, [a, b])
    num_a = central_differences(lambda x: -_np_mutual_information(_softmax(x), _softmax(logits_b)), logits_a)
    num_b = central_differences(lambda x: -_np_mutual_information(_softmax(logits_a), _softmax(x)), logits_b)
    assert np.abs(num_a).max() > 1e-3
    np.testing.assert_allclose(grad_a.numpy(), num_a, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grad_b.numpy(), num_b, rtol=1e-3, atol=1e-5)


def test_two_replicas_give_the_loss_and_gradients_of_one_device(rng, two_device_strategy):
    """Each replica holds half the batch; the halves cluster differently, so a joint of the local
    batch gives another loss. Every replica must return the global loss, and the gradients of
    its rows (its loss divided by the replica count, as train_step does) must be one device's."""
    k, n = 3, 8
    first = _one_hot(np.arange(4) % 2, k) * 0.8 + 0.2 / k  # the first replica's images: clusters 0 and 1
    second = _one_hot(np.full(4, 2), k) * 0.6 + 0.4 / k    # the second's: mostly cluster 2
    p_a = np.concatenate([first, second]).astype(np.float32)
    p_b = np.roll(p_a, 1, axis=0) * 0.5 + p_a * 0.5
    logits_a, logits_b = np.log(p_a), np.log(p_b)
    a, b = tf.constant(logits_a), tf.constant(logits_b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss = iic_loss(tf.nn.softmax(a), tf.nn.softmax(b))
    grad_a, grad_b = tape.gradient(loss, [a, b])
    assert float(loss) == pytest.approx(-_np_mutual_information(p_a, p_b), rel=1e-5)
    local = np.mean([-_np_mutual_information(p_a[:4], p_b[:4]), -_np_mutual_information(p_a[4:], p_b[4:])])
    assert abs(local - float(loss)) > 0.05 * abs(float(loss))

    @tf.function
    def step(v):
        def replica_fn(v):
            x, y = v["a"], v["b"]
            with tf.GradientTape() as tape:
                tape.watch([x, y])
                replica_loss = iic_loss(tf.nn.softmax(x), tf.nn.softmax(y))
                scaled = replica_loss / two_device_strategy.num_replicas_in_sync
            return replica_loss, tape.gradient(scaled, [x, y])
        return two_device_strategy.run(replica_fn, (v,))

    losses, (dist_a, dist_b) = step(distribute_views(two_device_strategy, {"a": a, "b": b}))
    results = two_device_strategy.experimental_local_results
    np.testing.assert_allclose([float(x) for x in results(losses)], [float(loss)] * 2, rtol=1e-5)
    scale = max(np.abs(grad_a.numpy()).max(), np.abs(grad_b.numpy()).max())
    assert scale > 1e-3
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in results(dist_a)]), grad_a.numpy(), atol=1e-5 * scale)
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in results(dist_b)]), grad_b.numpy(), atol=1e-5 * scale)


# ---- Sobel --------------------------------------------------------------------------------

def _np_sobel(images):
    """The paper's kernels as cross-correlation over the zero-padded grey image, float64 loops."""
    kx = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
    ky = kx.T  # [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
    gray = np.asarray(images, np.float64) @ np.array([0.299, 0.587, 0.114])
    b, h, w = gray.shape
    padded = np.zeros((b, h + 2, w + 2))
    padded[:, 1:-1, 1:-1] = gray
    out = np.zeros((b, h, w, 3))
    for y in range(h):
        for x in range(w):
            window = padded[:, y:y + 3, x:x + 3]
            out[:, y, x, 0] = (window * kx).sum(axis=(1, 2))
            out[:, y, x, 1] = (window * ky).sum(axis=(1, 2))
    return out


def test_sobel_matches_numpy_and_a_step_edge(rng):
    images = rng.uniform(size=(2, 7, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(sobel(images).numpy(), _np_sobel(images), atol=1e-5)
    # a vertical edge, dark left half and white right half: d/dx = left - right = -(1 + 2 + 1) on
    # the two columns beside the edge, +4 on the last column (white against the zero padding), 0
    # elsewhere; d/dy = 0 away from the top and bottom rows
    edge = np.zeros((1, 6, 6, 3), np.float32)
    edge[:, :, 3:] = 1.0
    gradients = sobel(edge).numpy()[0]
    np.testing.assert_allclose(gradients[1:-1, :, 0], np.tile([0, 0, -4, -4, 0, 4], (4, 1)), atol=1e-6)
    np.testing.assert_allclose(gradients[1:-1, :, 1], 0.0, atol=1e-6)
    assert np.all(gradients[..., 2] == 0.0)


# ---- the method -----------------------------------------------------------------------------

TINY = dict(backbone="resnet18", width=0.125, image_size=32, num_sub_heads=3, num_overclusters=20)


def _images(n=8):
    return tf.constant(zoo.data.load_arrays("shapes", "train").images[:n])


def _method(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("iic", **{**TINY, **overrides})


def test_views_pair_each_image_with_its_transformed_copies_and_sobel_filters_both():
    plain = _method(num_repeats=2)
    views = plain.make_views(_images(), tf.zeros([8], tf.int32), tf.constant([1, 2]))
    assert views["image"].shape == (8, 32, 32, 3) and views["transformed"].shape == (8, 2, 32, 32, 3)
    assert not np.allclose(views["transformed"][:, 0], views["transformed"][:, 1])  # independent copies
    with_sobel = _method(num_repeats=2, sobel=True)
    assert plain.unit_range_views and not with_sobel.unit_range_views
    filtered = with_sobel.make_views(_images(), tf.zeros([8], tf.int32), tf.constant([1, 2]))
    # the same crops, flips and jitter (same seed), then the Sobel filter on both views
    np.testing.assert_allclose(filtered["image"].numpy(), _np_sobel(views["image"].numpy()), atol=1e-5)
    np.testing.assert_allclose(filtered["transformed"][:, 1].numpy(), _np_sobel(views["transformed"][:, 1].numpy()),
                               atol=1e-5)


def test_loss_is_the_mean_over_heads_and_sub_heads_of_each_image_against_its_copies():
    method = _method(num_repeats=2)
    views = method.make_views(_images(), tf.zeros([8], tf.int32), tf.constant([1, 2]))
    # Confident assignments that differ between images, so that the MI is far from 0: larger
    # weights, and biases that centre the logits over the batch (pooled features share a large
    # common part at initialisation).
    mean_features = tf.reduce_mean(method.encoder(views["image"], training=True), axis=0, keepdims=True)
    for head in (method.main_head, method.overcluster_head):
        dense = head.layers[-1]
        dense.kernel.assign(dense.kernel * 30.0)
        dense.bias.assign(-tf.matmul(mean_features, dense.kernel)[0])
    loss, metrics = method.pretext_loss(views, training=True)
    copies = tf.reshape(views["transformed"], [-1, 32, 32, 3])
    expected = {}
    for head in ("main", "overcluster"):
        # training=True: the batch-norm batches of pretext_loss (x alone, then all copies)
        p_x = np.repeat(method.cluster_probabilities(views["image"], head=head, training=True).numpy(), 2, axis=0)
        p_gx = method.cluster_probabilities(copies, head=head, training=True).numpy()  # row 2b + r: copy r of image b
        expected[head] = [-_np_mutual_information(p_x[:, i], p_gx[:, i]) for i in range(3)]
    assert min(expected["main"]) < -0.1
    np.testing.assert_allclose([float(metrics[f"main_loss_{i}"]) for i in range(3)], expected["main"], rtol=1e-4)
    assert float(metrics["overcluster_loss"]) == pytest.approx(np.mean(expected["overcluster"]), rel=1e-4)
    assert float(loss) == pytest.approx((np.mean(expected["main"]) + np.mean(expected["overcluster"])) / 2, rel=1e-4)
    assert method.cluster_probabilities(views["image"], sub_head=1).shape == (8, 10)


def test_best_sub_head_is_the_main_sub_head_with_the_lowest_mean_loss():
    method = _method(num_repeats=1)
    method.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    views = method.make_views(_images(), tf.zeros([8], tf.int32), tf.constant([1, 2]))
    logs = method.fit(tf.data.Dataset.from_tensors(views).repeat(2), epochs=1, verbose=0).history
    sub_head_losses = [logs[f"main_loss_{i}"][-1] for i in range(3)]
    assert logs["best_sub_head"][-1] == int(np.argmin(sub_head_losses))
    assert len(set(sub_head_losses)) == 3  # distinct sub-heads: the argmin means something


@pytest.mark.parametrize("field, value", [("num_sub_heads", 0), ("num_overclusters", 0), ("crop_fraction", 1.5)])
def test_bad_config_is_refused_with_the_field_named(field, value):
    with pytest.raises(ValueError, match=field):
        _method(**{field: value})
