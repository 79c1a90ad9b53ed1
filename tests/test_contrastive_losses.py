"""SupCon and triplet losses (zoo.losses) against independent references: plain-numpy SupCon
written from Khosla et al. 2020 eq. 2 (L_out), brute-force numpy triplet losses enumerating every
(anchor, positive, negative) of the batch, hand-computed tiny cases, zoo.losses.nt_xent (SupCon
with distinct labels), numpy finite differences for the gradients, and the single-device value
for 2 replicas (the mining and the positives must see the global batch)."""
import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from zoo.losses import (TRIPLET_MINING, nt_xent, supcon_loss, triplet_batch_all, triplet_batch_hard, triplet_loss,
                        triplet_pairs, triplet_semi_hard)
from numerics import central_differences

MODES = sorted(TRIPLET_MINING)


def _keys(labels, views):
    """Per view (image-major rows): its label, or a unique key for an unlabelled (-1) image."""
    keys = [int(lab) if lab >= 0 else -1 - i for i, lab in enumerate(labels)]
    return np.repeat(np.array(keys), views)


# ---- SupCon ----

def _numpy_supcon(z, labels, temperature):
    """Khosla et al. eq. 2 in float64, one anchor at a time: for view i,
    -1/|P(i)| sum_{p in P(i)} log exp(s_ip/t) / sum_{a != i} exp(s_ia/t), s = cosine similarity,
    P(i) = the other views with i's label (an unlabelled image: its own other views); mean over i."""
    b, v, d = z.shape
    x = z.reshape(b * v, d).astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    keys = _keys(labels, v)
    total = 0.0
    for i in range(b * v):
        others = [a for a in range(b * v) if a != i]
        s = {a: float(x[i] @ x[a]) / temperature for a in others}
        m = max(s.values())
        log_denom = m + math.log(sum(math.exp(s[a] - m) for a in others))
        positives = [p for p in others if keys[p] == keys[i]]
        total += -sum(s[p] - log_denom for p in positives) / len(positives)
    return total / (b * v)


@pytest.mark.parametrize("labels, views, dim, temperature", [
    ([0, 1, 0, 2, 1, 0, 3, 0, 2], 2, 8, 0.1),   # class 0: 4 images = 8 views, classes 1, 2: 2 images
    ([0, 1, 0, 2, 1, 0, 3, 0, 2], 2, 8, 0.5),
    ([1, 1, 1, 2, 2, 0], 3, 5, 0.2),            # 3 views per image
    ([4, 4, 4, 4], 2, 3, 1.0),                  # one class: every other view is a positive
    ([2, -1, 2, -1, 0, 0, -1], 2, 6, 0.3),      # unlabelled images: only their own views are positives
])
def test_supcon_matches_numpy(rng, labels, views, dim, temperature):
    z = rng.normal(size=(len(labels), views, dim)).astype(np.float32)
    expected = _numpy_supcon(z, labels, temperature)
    got = float(supcon_loss(z, np.array(labels, np.int32), temperature))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Labels change the loss: the same views, every image its own class, give another value.
    distinct = float(supcon_loss(z, np.arange(len(labels), dtype=np.int32), temperature))
    assert abs(distinct - got) > 1e-3
    np.testing.assert_allclose(distinct, _numpy_supcon(z, list(range(len(labels))), temperature), rtol=1e-5)


def test_unlabelled_images_are_not_one_class(rng):
    # -1 means "no label", not "class -1": two unlabelled images are negatives of each other.
    z = rng.normal(size=(4, 2, 5)).astype(np.float32)
    unlabelled = float(supcon_loss(z, np.array([-1, -1, 0, 0], np.int32), 0.5))
    as_class = float(supcon_loss(z, np.array([7, 7, 0, 0], np.int32), 0.5))
    np.testing.assert_allclose(unlabelled, float(supcon_loss(z, np.array([5, 6, 0, 0], np.int32), 0.5)), rtol=1e-6)
    assert abs(unlabelled - as_class) > 1e-3


@pytest.mark.parametrize("n, dim, temperature", [(1, 3, 0.5), (5, 8, 0.1), (12, 16, 0.5)])
def test_supcon_with_distinct_labels_is_nt_xent(rng, n, dim, temperature):
    z_a = rng.normal(size=(n, dim)).astype(np.float32)
    z_b = rng.normal(size=(n, dim)).astype(np.float32)
    z = np.stack([z_a, z_b], axis=1)
    expected = float(nt_xent(z_a, z_b, temperature))
    np.testing.assert_allclose(float(supcon_loss(z, np.arange(n, dtype=np.int32) * 3, temperature)), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(float(supcon_loss(z, np.full(n, -1, np.int32), temperature)), expected, rtol=1e-5)


def test_supcon_hand_computed_case():
    # Two images, views e1, e1 (image 0) and e2, e2 (image 1); t = 1, so s = cos in {1, 0}.
    # Same label: anchor e1 has positives e1 (s=1), e2, e2 (s=0) over the denominator e + 2:
    #   -(1/3)[(1 - log(e+2)) + 2 (0 - log(e+2))] = log(e + 2) - 1/3, the same for every anchor.
    # Different labels: one positive, its own other view: -(1 - log(e+2)) = log(1 + 2/e).
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    z = np.array([[e1, e1], [e2, e2]], np.float32)
    np.testing.assert_allclose(float(supcon_loss(z, np.array([3, 3]), 1.0)), math.log(math.e + 2) - 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(float(supcon_loss(z, np.array([3, 4]), 1.0)), math.log(1 + 2 / math.e), rtol=1e-6)
    # Scale does not matter (cosine similarity).
    np.testing.assert_allclose(float(supcon_loss(z * np.array([[[2.0], [0.5]], [[9.0], [0.1]]], np.float32),
                                                 np.array([3, 3]), 1.0)), math.log(math.e + 2) - 1 / 3, rtol=1e-6)


def test_supcon_gradient_matches_finite_differences(rng):
    z = rng.normal(size=(4, 2, 3))
    labels = np.array([0, 1, 0, 0])
    t = 0.5
    zt = tf.constant(z, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        loss = supcon_loss(zt, labels, t)
    grad = tape.gradient(loss, zt).numpy()
    num = central_differences(lambda x: _numpy_supcon(x, labels, t), z)
    np.testing.assert_allclose(grad, num, rtol=1e-3, atol=1e-5)
    assert np.abs(grad).max() > 1e-3


# ---- triplet ----

def _numpy_distances(z, squared):
    b, v, d = z.shape
    x = z.reshape(b * v, d).astype(np.float64)
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return sq if squared else np.sqrt(sq)


def _numpy_triplet(z, labels, margin, mining, squared=True):
    """Brute force over every triplet (a, p, n) of the batch's views: p != a with a's key, n with
    another key, loss(a, p, n) = max(0, d(a,p) - d(a,n) + margin), d from the raw embeddings.
    batch_all: mean of the positive losses; batch_hard: per anchor (with a positive and a negative)
    the largest d(a,p) and smallest d(a,n); semi_hard: per pair (a, p) the closest n with
    d(a,n) > d(a,p), else the farthest n, mean over the pairs."""
    d = _numpy_distances(z, squared)
    keys = _keys(labels, z.shape[1])
    views = range(len(keys))
    pos = {a: [p for p in views if p != a and keys[p] == keys[a]] for a in views}
    neg = {a: [n for n in views if keys[n] != keys[a]] for a in views}
    hinge = lambda x: max(0.0, x + margin)  # noqa: E731
    if mining == "batch_all":
        losses = [hinge(d[a, p] - d[a, n]) for a, p, n in itertools.product(views, views, views)
                  if p in pos[a] and n in neg[a]]
        active = [x for x in losses if x > 0]
        return sum(active) / len(active) if active else 0.0
    if mining == "batch_hard":
        losses = [hinge(max(d[a, p] for p in pos[a]) - min(d[a, n] for n in neg[a])) for a in views
                  if pos[a] and neg[a]]
        return sum(losses) / len(losses) if losses else 0.0
    losses = []
    for a in views:
        for p in pos[a]:
            if not neg[a]:
                continue
            farther = [d[a, n] for n in neg[a] if d[a, n] > d[a, p]]
            losses.append(hinge(d[a, p] - (min(farther) if farther else max(d[a, n] for n in neg[a]))))
    return sum(losses) / len(losses) if losses else 0.0


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("labels, views, margin, squared", [
    ([0, 1, 0, 2, 1, 0, 3, 0, 2], 2, 0.2, True),
    ([0, 1, 0, 2, 1, 0, 3, 0, 2], 2, 0.5, False),
    ([1, 1, 1, 2, 2, 0], 3, 0.2, True),        # 3 views per image
    ([0, 0, 1, 1, 1, 2, 2, 0], 1, 1.0, True),   # one view per image: positives only via labels
    ([-1, -1, -1, -1, -1, -1], 2, 0.2, True),  # self-supervised: the other view is the positive
    ([2, -1, 2, -1, 0, 0, -1], 2, 0.3, False),
])
def test_triplet_matches_brute_force(rng, mining, labels, views, margin, squared):
    z = _unit(rng.normal(size=(len(labels), views, 4)))
    expected = _numpy_triplet(z, labels, margin, mining, squared)
    got = float(triplet_loss(z, np.array(labels, np.int32), margin, mining, squared))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert expected > 1e-3  # a non-trivial case


@pytest.mark.parametrize("mining", MODES)
def test_triplet_modes_differ_and_unnormalised_embeddings(rng, mining):
    # Not normalised: the functions take embeddings as given (the method normalises).
    z = rng.normal(size=(10, 2, 3)).astype(np.float32) * 2.0
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    np.testing.assert_allclose(float(triplet_loss(z, labels, 0.7, mining)), _numpy_triplet(z, labels, 0.7, mining),
                               rtol=1e-5)
    others = {m: float(triplet_loss(z, labels, 0.7, m)) for m in MODES}
    assert len({round(v, 4) for v in others.values()}) == 3


# Hand case (Euclidean, margin 0.5), 1-d embeddings, one view per image:
#   p0 = 0, p1 = 1 (class 0); p2 = 2, p3 = 4 (class 1).
#   d01 = 1, d02 = 2, d03 = 4, d12 = 1, d13 = 3, d23 = 2.
# batch_all, l = d(a,p) - d(a,n) + 0.5 over (a, p, n):
#   (0,1,2) -0.5, (0,1,3) -2.5, (1,0,2) 0.5, (1,0,3) -1.5, (2,3,0) 0.5, (2,3,1) 1.5, (3,2,0) -1.5,
#   (3,2,1) -0.5: the positive ones 0.5, 0.5, 1.5 -> mean 5/6.
# batch_hard: a0: 1 - 2 + .5 < 0; a1: 1 - 1 + .5 = 0.5; a2: 2 - 1 + .5 = 1.5; a3: 2 - 3 + .5 < 0 -> 2/4.
# semi_hard: (0,1): negatives farther than 1: 2, 4 -> 2: 1 - 2 + .5 < 0. (1,0): d = 1 (p2, a tie: not
#   farther), 3 -> 3: < 0. (2,3): d(2,0) = 2 (tie), d(2,1) = 1: none farther -> the farthest, 2:
#   2 - 2 + .5 = 0.5. (3,2): 4, 3 -> 3: 2 - 3 + .5 < 0. Mean over 4 pairs: 0.125.
HAND = {"batch_all": 5 / 6, "batch_hard": 0.5, "semi_hard": 0.125}


@pytest.mark.parametrize("mining", MODES)
def test_triplet_hand_computed_case(mining):
    z = np.array([0.0, 1.0, 2.0, 4.0], np.float32).reshape(4, 1, 1)
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(float(triplet_loss(z, labels, 0.5, mining, squared=False)), HAND[mining], rtol=1e-6)
    np.testing.assert_allclose(_numpy_triplet(z, labels, 0.5, mining, squared=False), HAND[mining], rtol=1e-12)
    dist, positive, negative = triplet_pairs(z, labels, squared=False)
    np.testing.assert_array_equal(dist.numpy(), [[0, 1, 2, 4], [1, 0, 1, 3], [2, 1, 0, 2], [4, 3, 2, 0]])
    np.testing.assert_array_equal(positive.numpy(), [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    np.testing.assert_array_equal(negative.numpy(), [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])
    pair_level = {"batch_all": triplet_batch_all, "batch_hard": triplet_batch_hard, "semi_hard": triplet_semi_hard}
    np.testing.assert_allclose(float(pair_level[mining](dist, positive, negative, 0.5)), HAND[mining], rtol=1e-6)


def test_triplet_squared_distances_hand_case():
    # Squared distances of the same points, margin 0.5: batch_hard a1: 1 - 1 + .5 = .5, a2: 4 - 1 + .5 = 3.5,
    # a0: 1 - 4 < 0, a3: 4 - 9 < 0 -> 4 / 4 = 1.
    z = np.array([0.0, 1.0, 2.0, 4.0], np.float32).reshape(4, 1, 1)
    np.testing.assert_allclose(float(triplet_loss(z, [0, 0, 1, 1], 0.5, "batch_hard", squared=True)), 1.0, rtol=1e-6)


def test_unknown_mining_is_an_error():
    with pytest.raises(ValueError, match="batch_hard"):
        triplet_loss(np.zeros((2, 2, 3), np.float32), [0, 1], mining="hardest")


@pytest.mark.parametrize("mining", MODES)
def test_triplet_gradient_matches_finite_differences(rng, mining):
    z = rng.normal(size=(5, 2, 3))
    labels = np.array([0, 1, 0, -1, 1])
    margin = 1.0
    zt = tf.constant(z, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        loss = triplet_loss(zt, labels, margin, mining)
    grad = tape.gradient(loss, zt).numpy()
    num = central_differences(lambda x: _numpy_triplet(x, labels, margin, mining), z)
    np.testing.assert_allclose(grad, num, rtol=1e-3, atol=2e-4)
    assert np.abs(grad).max() > 1e-2


def test_losses_compile_with_xla(rng):
    z = _unit(rng.normal(size=(6, 2, 4)))
    labels = np.array([0, 1, 0, -1, 1, 2], np.int32)
    for mining in MODES:
        jit = tf.function(lambda z, y, m=mining: triplet_loss(z, y, 0.2, m), jit_compile=True)
        np.testing.assert_allclose(float(jit(z, labels)), float(triplet_loss(z, labels, 0.2, mining)), rtol=1e-5)
    jit = tf.function(lambda z, y: supcon_loss(z, y, 0.1), jit_compile=True)
    np.testing.assert_allclose(float(jit(z, labels)), float(supcon_loss(z, labels, 0.1)), rtol=1e-5)


# ---- two replicas (conftest.py splits the CPU into 2 logical devices) ----

def _per_replica(strategy, full):
    half = full.shape[0] // 2
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(full[ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half]))


LOSSES = {"supcon": lambda z, y: supcon_loss(z, y, 0.2),
          **{m: (lambda z, y, m=m: triplet_loss(z, y, 0.3, m)) for m in MODES}}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_two_replicas_match_single_device(two_device_strategy, rng, name):
    """Replica 0 holds images 0-3, replica 1 images 4-7: positives (same label) and hardest
    negatives across the replicas, and labels spread unequally (unequal triplet counts)."""
    strategy = two_device_strategy
    x = rng.normal(size=(8, 2, 5)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, -1, 1, 0, -1], np.int32)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)
    fn = LOSSES[name]

    w_single = tf.Variable(w0)
    with tf.GradientTape() as tape:
        loss_single = fn(tf.math.l2_normalize(tf.constant(x) @ w_single, axis=-1), labels)
    grad_single = tape.gradient(loss_single, w_single).numpy()
    reference = (_numpy_supcon(x @ w0, labels, 0.2) if name == "supcon"
                 else _numpy_triplet(_unit(x @ w0), labels, 0.3, name))
    np.testing.assert_allclose(float(loss_single), reference, rtol=1e-5)

    with strategy.scope():
        w = tf.Variable(w0)

    def step(xr, yr):
        with tf.GradientTape() as tape:
            loss = fn(tf.math.l2_normalize(xr @ w, axis=-1), yr)
            scaled = loss / tf.distribute.get_replica_context().num_replicas_in_sync
        return loss, tape.gradient(scaled, w)

    losses, grads = strategy.run(tf.function(step), args=(_per_replica(strategy, x), _per_replica(strategy, labels)))
    per_replica = [float(v) for v in strategy.experimental_local_results(losses)]
    assert abs(per_replica[0] - per_replica[1]) > 1e-4
    np.testing.assert_allclose(np.mean(per_replica), float(loss_single), rtol=1e-5)
    grad_sum = strategy.reduce(tf.distribute.ReduceOp.SUM, grads, axis=None).numpy()
    np.testing.assert_allclose(grad_sum, grad_single, rtol=1e-4, atol=1e-6)
    assert np.abs(grad_single).max() > 1e-3
