"""zoo.eval.cluster and `zoo-eval --protocol cluster` (issue 19) against independent references:
hand-computed matchings, a brute-force search over every one-to-one cluster -> class matching,
NMI and ARI written out in numpy (and sklearn's functions on the same assignments), synthetic
blobs whose clusters are known."""
import itertools
import json
import os
from collections import Counter
from math import comb

import numpy as np
import pytest

from run_folders import untrained_run_folder
from zoo.eval import cluster_evaluate, clustering_scores, hungarian_accuracy, kmeans_clusters

# ------------------------------------------------------------------ Hungarian-matched accuracy


def test_hungarian_accuracy_of_a_relabelled_perfect_clustering_is_one():
    labels = [0, 0, 1, 1, 2, 2, 2]
    assert hungarian_accuracy(labels, [2, 2, 0, 0, 1, 1, 1]) == 1.0
    assert hungarian_accuracy(labels, [5, 5, 9, 9, 7, 7, 7]) == 1.0  # ids need not be 0..k-1
    scores = clustering_scores(labels, [2, 2, 0, 0, 1, 1, 1])
    assert scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    assert scores["accuracy"] == 1.0


def test_hungarian_accuracy_hand_case_beats_greedy_and_is_one_to_one():
    # contingency (rows: clusters, columns: classes), 17 samples:
    #   cluster 0: 5 of class 0, 4 of class 1
    #   cluster 1: 4 of class 0
    #   cluster 2: 1 of class 1, 3 of class 2
    # Best one-to-one matching: 0->1 (4), 1->0 (4), 2->2 (3) = 11 -> 11/17. Greedy on the largest
    # cell (0->0: 5) leaves cluster 1 only classes it has none of: 5 + 0 + 3 = 8. Many-to-one
    # (each cluster to its majority class) would count 5 + 4 + 3 = 12.
    table = {(0, 0): 5, (0, 1): 4, (1, 0): 4, (2, 1): 1, (2, 2): 3}
    clusters = np.repeat([c for c, _ in table], list(table.values()))
    labels = np.repeat([y for _, y in table], list(table.values()))
    order = np.random.default_rng(0).permutation(len(labels))  # sample order does not matter
    assert hungarian_accuracy(labels[order], clusters[order]) == pytest.approx(11 / 17)


def test_hungarian_accuracy_with_more_or_fewer_clusters_than_classes():
    # More clusters: class 0 split over clusters 0 and 1; only one of them is matched to it,
    # the other's sample counts as wrong (5 / 6; many-to-one would say 1.0).
    assert hungarian_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 2, 2, 2]) == pytest.approx(5 / 6)
    # Fewer clusters: classes 1 and 2 share cluster 1, only one of them is matched (4 / 6).
    assert hungarian_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1]) == pytest.approx(4 / 6)
    # One cluster for everything: the largest class.
    assert hungarian_accuracy([0, 1, 1, 2, 2, 2], [0] * 6) == pytest.approx(3 / 6)


def _brute_force_accuracy(labels, clusters):
    """Best count over every one-to-one map of clusters to classes (None: unmatched), / N."""
    counts = Counter(zip(clusters, labels))
    cluster_ids, class_ids = sorted(set(clusters)), sorted(set(labels))
    slots = class_ids + [None] * len(cluster_ids)
    best = max(sum(counts[(c, y)] for c, y in zip(cluster_ids, chosen))
               for chosen in itertools.permutations(slots, len(cluster_ids)))
    return best / len(labels)


@pytest.mark.parametrize("n_clusters,n_classes", [(3, 3), (4, 2), (2, 4), (5, 5)])
def test_hungarian_accuracy_matches_brute_force(rng, n_clusters, n_classes):
    for _ in range(5):
        labels = rng.integers(0, n_classes, 40)
        clusters = (labels + rng.integers(0, 2, 40) * rng.integers(0, n_clusters, 40)) % n_clusters
        assert hungarian_accuracy(labels, clusters) == pytest.approx(
            _brute_force_accuracy(labels.tolist(), clusters.tolist()))


def test_hungarian_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="as many cluster ids as labels"):
        hungarian_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="as many cluster ids as labels"):
        hungarian_accuracy([], [])
    with pytest.raises(ValueError, match="labels must be non-negative integers.*unlabelled"):
        hungarian_accuracy([0, -1], [0, 1])
    with pytest.raises(ValueError, match="cluster ids must be non-negative integers"):
        hungarian_accuracy([0, 1], [0.0, 1.0])


# ------------------------------------------------------------------------------- NMI and ARI

def _entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return -np.sum(p * np.log(p))


def _nmi_reference(labels, clusters):
    """I(U; V) / mean(H(U), H(V)) from the contingency table (arithmetic normalisation)."""
    table = np.zeros((labels.max() + 1, clusters.max() + 1))
    np.add.at(table, (labels, clusters), 1)
    p = table / table.sum()
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    nz = p > 0
    mutual = np.sum(p[nz] * np.log(p[nz] / outer[nz]))
    return mutual / (0.5 * (_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))))


def _ari_reference(labels, clusters):
    """Hubert & Arabie's adjusted Rand index from pair counts."""
    table = np.zeros((labels.max() + 1, clusters.max() + 1), np.int64)
    np.add.at(table, (labels, clusters), 1)
    pairs = sum(comb(int(v), 2) for v in table.ravel())
    rows = sum(comb(int(v), 2) for v in table.sum(axis=1))
    cols = sum(comb(int(v), 2) for v in table.sum(axis=0))
    expected = rows * cols / comb(int(table.sum()), 2)
    return (pairs - expected) / (0.5 * (rows + cols) - expected)


def test_nmi_and_ari_match_numpy_and_sklearn(rng):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    for _ in range(5):
        labels = rng.integers(0, 4, 60)
        clusters = np.where(rng.random(60) < 0.6, (labels + 1) % 4, rng.integers(0, 5, 60))
        scores = clustering_scores(labels, clusters)
        assert scores["nmi"] == pytest.approx(_nmi_reference(labels, clusters), abs=1e-10)
        assert scores["ari"] == pytest.approx(_ari_reference(labels, clusters), abs=1e-10)
        assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-12)
        assert scores["ari"] == pytest.approx(adjusted_rand_score(labels, clusters), abs=1e-12)
        assert scores["accuracy"] == pytest.approx(_brute_force_accuracy(labels.tolist(), clusters.tolist()))


# ---------------------------------------------------------------------------------- k-means

def test_kmeans_recovers_well_separated_blobs_by_direction(rng):
    # 4 classes, each a tight bundle of directions around its own axis of 8-D space, at lengths
    # 0.5 or 20 at random: on the raw features k-means splits long from short rows, on the
    # L2-normalised ones (the protocol) it finds the 4 directions.
    from sklearn.cluster import KMeans
    labels = np.repeat(np.arange(4), 50)
    directions = np.eye(8)[labels] + 0.05 * rng.normal(size=(200, 8))
    features = (directions * rng.choice([0.5, 20.0], size=(200, 1))).astype(np.float32)
    order = rng.permutation(200)
    features, labels = features[order], labels[order]
    report = cluster_evaluate(features, labels, 4, n_init=4, seed=3)
    assert report == {"k": 4, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "accuracy": 1.0,
                      "n_init": 4, "seed": 3}
    raw = KMeans(n_clusters=4, n_init=4, random_state=3).fit_predict(features)
    assert hungarian_accuracy(labels, raw) < 0.9  # so the case needs the normalisation
    # deterministic for a seed
    np.testing.assert_array_equal(kmeans_clusters(features, 4, n_init=2, seed=1),
                                  kmeans_clusters(features, 4, n_init=2, seed=1))


def test_kmeans_rejects_bad_k_and_too_few_samples(rng):
    features = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="k=6 clusters needs at least 6 samples, got 5"):
        kmeans_clusters(features, 6)
    with pytest.raises(ValueError, match="k=0"):
        kmeans_clusters(features, 0)
    with pytest.raises(ValueError, match="n_init=0"):
        kmeans_clusters(features, 2, n_init=0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        kmeans_clusters(features[0], 2)


# --------------------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A run folder as zoo-train leaves it, made without training: zoo-eval only reads it."""
    return untrained_run_folder(str(tmp_path_factory.mktemp("cluster") / "run"), "shapes?n=200")


def test_zoo_eval_cluster_writes_the_cluster_entry(untrained_run, capsys):
    import zoo
    from trainers.evaluate import main
    earlier = os.path.join(untrained_run, "eval.json")  # the run's knn / linear report stays as it was
    with open(earlier, "w") as f:
        json.dump({"knn": {"top1": 0.5}}, f)
    main([untrained_run, "--protocol", "cluster"])
    assert json.load(open(earlier)) == {"knn": {"top1": 0.5}}
    report = json.load(open(os.path.join(untrained_run, "eval-cluster.json")))
    val = zoo.data.load_arrays("shapes?n=200", "val")
    cluster = report["cluster"]
    assert set(cluster) == {"k", "nmi", "ari", "accuracy", "n_init", "seed"}
    assert cluster["k"] == val.num_classes and cluster["n_init"] == 10 and cluster["seed"] == 0
    assert 0.0 <= cluster["nmi"] <= 1.0 and -1.0 <= cluster["ari"] <= 1.0
    matched = cluster["accuracy"] * len(val)  # a count of val images, at least one
    assert 1 <= round(matched) <= len(val) and matched == pytest.approx(round(matched))
    assert "knn" not in report and "linear" not in report and report["val_images"] == len(val)
    assert "cluster k=" in capsys.readouterr().out
    # the cluster protocol needs the val features only
    cached = os.listdir(os.path.join(untrained_run, "features"))
    assert cached and all(name.startswith("val-") for name in cached), cached


def test_zoo_eval_unknown_protocol_is_still_a_clear_error(untrained_run, tmp_path):
    from trainers.evaluate import main
    with pytest.raises(SystemExit, match=r"Unknown protocol\(s\) \['clusters'\]; choose from "
                                         r"\['knn', 'linear', 'mlp', 'cluster', 'finetune'\]"):
        main([untrained_run, "--protocol", "knn,clusters", "--out", str(tmp_path / "eval.json")])
    assert not (tmp_path / "eval.json").exists()


def test_cluster_reports_are_not_read_as_block_probes(tmp_path):
    """The model card's per-block table reads RUN/eval-LAYER.json; a report of another protocol
    beside them (eval-cluster.json, eval-stage2-cluster.json, eval-mlp.json, ...) is not a block."""
    from trainers.runs import read_layer_evals
    for name in ("eval.json", "eval-stage2.json", "eval-cluster.json", "eval-stage2-cluster.json", "eval-mlp.json",
                 "eval-finetune.json", "eval-mlp-finetune.json", "eval-stage3-mlp.json"):
        layer = {"layer": name.split("-")[1]} if "stage" in name else {}
        (tmp_path / name).write_text(json.dumps({"file": name, **layer}))
    assert [name for name, _ in read_layer_evals(str(tmp_path))] == ["eval-stage2.json", "eval.json"]
