"""zoo-plot: the numbers behind each picture against independent references (a brute-force
numpy cosine top-k, sklearn.metrics.confusion_matrix, zoo-eval's linear_probe score, the
trustworthiness of sklearn.manifold, a hand-written metrics.jsonl), and each command writing a
valid, non-blank PNG of the expected size from an untrained width-0.125 run folder."""
import json
import os
import sys

import numpy as np
import pytest

from run_folders import untrained_run_folder
from zoo.eval.plots_data import confusion_matrix, cosine_neighbours, subsample, tsne_embedding

DATA = "shapes?n=200"  # 170 train and 30 val images of 10 classes


def _check_png(path, width, height):
    """`path` is a PNG of about width x height pixels that is not blank."""
    from PIL import Image
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert abs(image.width - width) <= 2 and abs(image.height - height) <= 2, image.size
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # drawn on, not a plain background


# ------------------------------------------------------------------------------ the numbers

def test_subsample_draws_distinct_sorted_indices_reproducibly():
    drawn = subsample(100, 10, seed=3)
    assert len(drawn) == 10 and len(set(drawn.tolist())) == 10
    assert drawn.tolist() == sorted(drawn.tolist()) and 0 <= drawn.min() and drawn.max() < 100
    assert drawn.tolist() == subsample(100, 10, seed=3).tolist()
    assert drawn.tolist() != subsample(100, 10, seed=4).tolist()
    assert subsample(7, 10).tolist() == list(range(7))
    with pytest.raises(ValueError, match="n=0"):
        subsample(7, 0)


def test_cosine_neighbours_match_a_brute_force_top_k():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(40, 6))
    queries = rng.normal(size=(5, 6))
    bank[17] = 25.0 * queries[2]  # same direction, far longer: cosine 1, though far by Euclidean distance
    indices, similarities = cosine_neighbours(queries, bank, k=4)
    for q, query in enumerate(queries):
        cosines = [float(np.dot(query, b) / (np.sqrt(np.dot(query, query)) * np.sqrt(np.dot(b, b)))) for b in bank]
        expected = sorted(range(len(bank)), key=lambda i: (-cosines[i], i))[:4]
        assert indices[q].tolist() == expected
        np.testing.assert_allclose(similarities[q], [cosines[i] for i in expected], rtol=1e-9)
    assert indices[2, 0] == 17 and similarities[2, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k=41: must be between 1 and the 40 images"):
        cosine_neighbours(queries, bank, k=41)


def test_confusion_matrix_matches_sklearn():
    from sklearn.metrics import confusion_matrix as sklearn_confusion
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=200)
    labels[labels == 3] = 4  # class 3 has no images: a row of zeros
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 5, size=200))
    classes = list(range(5))
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 5, normalise=False),
                                  sklearn_confusion(labels, predictions, labels=classes))
    matrix = confusion_matrix(labels, predictions, 5)
    np.testing.assert_allclose(matrix, sklearn_confusion(labels, predictions, labels=classes, normalize="true"))
    assert matrix[3].tolist() == [0.0] * 5
    np.testing.assert_allclose(np.delete(matrix, 3, axis=0).sum(axis=1), 1.0)
    with pytest.raises(ValueError, match=r"predictions must lie in 0..4 \(num_classes=5\), got 1..5"):
        confusion_matrix(labels, np.minimum(predictions + 1, 5), 5)


def test_tsne_keeps_separated_clusters_apart():
    from sklearn.manifold import trustworthiness
    rng = np.random.default_rng(2)
    centres = 5.0 * np.eye(3, 16)  # three orthogonal directions: far apart in cosine too
    labels = np.repeat(np.arange(3), 20)
    features = centres[labels] + rng.normal(scale=0.3, size=(60, 16))
    points = tsne_embedding(features, seed=0)
    assert points.shape == (60, 2) and np.all(np.isfinite(points))
    distances = np.linalg.norm(points[:, None] - points[None], axis=2) + np.diag(np.full(60, np.inf))
    assert np.all(labels[distances.argmin(axis=1)] == labels)  # each point's 2-D neighbour is of its cluster
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert trustworthiness(unit, points, n_neighbors=5) > 0.9
    with pytest.raises(ValueError, match="at least 5 rows"):
        tsne_embedding(features[:4])


METRICS = [  # as MetricsFile writes them; epoch 3 was written twice (a resumed run), the last counts
    {"epoch": 1, "step": 10, "epoch_seconds": 2.0, "loss": 4.0, "rotation_accuracy": 0.3, "learning_rate": 0.1,
     "embedding_std": 0.01, "embedding_std_ratio": 0.5, "effective_rank": 3.0},
    {"epoch": 2, "step": 20, "epoch_seconds": 2.0, "loss": 3.0, "rotation_accuracy": 0.4, "val_knn_top1": 0.2,
     "embedding_std": 0.02, "embedding_std_ratio": 0.6, "effective_rank": 4.0},
    {"epoch": 3, "step": 30, "epoch_seconds": 2.0, "loss": 9.9, "rotation_accuracy": 0.0,
     "embedding_std": 0.03, "embedding_std_ratio": 0.0, "effective_rank": 0.0},
    {"epoch": 3, "step": 30, "epoch_seconds": 2.0, "loss": 2.5, "rotation_accuracy": 0.5, "aux_loss": 1.0,
     "embedding_std": 0.03, "embedding_std_ratio": 0.7, "effective_rank": 5.0},
    {"epoch": 4, "step": 40, "epoch_seconds": 2.0, "loss": 2.0, "rotation_accuracy": 0.55, "val_knn_top1": 0.3,
     "embedding_std": 0.04, "embedding_std_ratio": 0.8, "effective_rank": 6.0},
]


def _write_run_with_metrics(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write("method: rotation\ndata: shapes\n")
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(row) for row in METRICS[:3]) + "\n\n" + json.dumps(METRICS[3]) + "\n"
                + json.dumps(METRICS[4]) + "\n")
    return folder


def test_training_curves_read_a_hand_written_metrics_file(tmp_path):
    from trainers.plots import training_curves
    curves = training_curves(_write_run_with_metrics(str(tmp_path / "run")))
    as_lists = [(name, epochs.tolist(), values.tolist()) for name, epochs, values in curves]
    assert as_lists == [
        ("loss", [1, 2, 3, 4], [4.0, 3.0, 2.5, 2.0]),
        ("aux_loss", [3], [1.0]),
        ("rotation_accuracy", [1, 2, 3, 4], [0.3, 0.4, 0.5, 0.55]),
        ("val_knn_top1", [2, 4], [0.2, 0.3]),
        ("embedding_std_ratio", [1, 2, 3, 4], [0.5, 0.6, 0.7, 0.8]),
        ("effective_rank", [1, 2, 3, 4], [3.0, 4.0, 5.0, 6.0]),
    ]


def test_training_curves_errors_name_the_problem(tmp_path):
    from trainers.plots import training_curves
    with pytest.raises(ValueError, match="not a zoo-train run folder"):
        training_curves(str(tmp_path))
    (tmp_path / "config.yaml").write_text("method: rotation\n")
    with pytest.raises(FileNotFoundError, match="metrics.jsonl not found: the run has not finished an epoch"):
        training_curves(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "loss": 2.0}\n{"epoch": 2, "lo')
    with pytest.raises(ValueError, match="metrics.jsonl, line 2: not a JSON object with an epoch"):
        training_curves(str(tmp_path))


# -------------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A width-0.125 simclr run folder as zoo-train leaves it, made without training."""
    return untrained_run_folder(str(tmp_path_factory.mktemp("plots") / "run"), DATA)


def test_zoo_plot_curves_writes_one_panel_per_curve(tmp_path, capsys):
    from trainers.plots import main
    run = _write_run_with_metrics(str(tmp_path / "run"))
    assert main(["curves", run]) == 0
    out = os.path.join(run, "plots", "curves.png")
    assert capsys.readouterr().out.strip() == f"wrote {os.path.abspath(out)}"
    _check_png(out, 3 * 420, 2 * 320 + 40)  # 6 curves: 2 lines of 3 panels


def test_zoo_plot_curves_needs_a_run_folder(tmp_path):
    from trainers.plots import main
    with pytest.raises(SystemExit, match="is not a zoo-train run folder"):
        main(["curves", str(tmp_path), "--out", str(tmp_path / "c.png")])
    assert not (tmp_path / "c.png").exists()


def test_zoo_plot_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    from trainers.plots import main
    run = _write_run_with_metrics(str(tmp_path / "run"))
    for module in ("matplotlib", "matplotlib.figure"):  # importing them now raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemExit, match="pip install matplotlib"):
        main(["curves", run])
    assert not os.path.exists(os.path.join(run, "plots"))


def test_zoo_plot_embedding_of_a_run(untrained_run, capsys):
    from trainers.plots import main
    assert main(["embedding", untrained_run, "--n", "20"]) == 0
    out = os.path.join(untrained_run, "plots", "embedding.png")
    assert capsys.readouterr().out.strip() == f"wrote {os.path.abspath(out)}"
    _check_png(out, 900, 700)
    # the val features went to zoo-eval's cache, in the run folder
    assert any(name.startswith("val-") for name in os.listdir(os.path.join(untrained_run, "features")))


def test_zoo_plot_shares_zoo_evals_feature_cache(untrained_run, tmp_path):
    from trainers.evaluate import evaluate
    from trainers.plots import split_features
    split_features(untrained_run, splits=("val",), verbose=False)
    folder = os.path.join(untrained_run, "features")
    before = {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}
    evaluate(untrained_run, protocols=["cluster"], verbose=False)  # reads the val features zoo-plot cached
    after = {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}
    assert after == before and any(name.startswith("val-") for name in after)


def test_zoo_plot_retrieval_neighbours_are_the_brute_force_ones(untrained_run, tmp_path):
    import zoo
    from trainers.plots import plot_retrieval
    from trainers.runs import run_encoder
    out = str(tmp_path / "retrieval.png")
    _, queries, neighbours, similarities = plot_retrieval(untrained_run, out, queries=3, k=4, verbose=False)
    _check_png(out, 1.3 * 5 * 100, (1.45 * 3 + 0.7) * 100)
    # reference: the encoder called directly, and the cosine top-4 over the whole train set in numpy
    encoder = run_encoder(untrained_run)[2]
    train, val = zoo.data.load_arrays(DATA, "train"), zoo.data.load_arrays(DATA, "val")
    bank = np.asarray(encoder(train.images.astype(np.float32), training=False), np.float64)
    query = np.asarray(encoder(val.images[queries].astype(np.float32), training=False), np.float64)
    cosines = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (bank / np.linalg.norm(bank, axis=1,
                                                                                             keepdims=True)).T
    expected = np.argsort(-cosines, axis=1)[:, :4]
    np.testing.assert_allclose(similarities, np.take_along_axis(cosines, expected, axis=1), atol=1e-4)
    gaps = np.diff(np.sort(cosines, axis=1)[:, ::-1][:, :5], axis=1)  # a near-tie may swap two neighbours
    clear = np.abs(gaps[:, :4]) > 1e-4
    np.testing.assert_array_equal(neighbours[clear], expected[clear])


def test_zoo_plot_confusion_is_the_linear_probes(untrained_run, tmp_path):
    from sklearn.metrics import confusion_matrix as sklearn_confusion
    import zoo
    from trainers.plots import plot_confusion, split_features
    from zoo.eval import linear_probe
    out = str(tmp_path / "confusion.png")
    _, matrix, predictions = plot_confusion(untrained_run, out, verbose=False)
    _check_png(out, 850, 750)  # 10 classes: an 8.5 x 7.5 inch figure
    val = zoo.data.load_arrays(DATA, "val")
    np.testing.assert_allclose(matrix, sklearn_confusion(val.labels, predictions, labels=range(10), normalize="true"))
    # the predictions are zoo-eval's probe's: same features (zoo-eval's cache), same top-1
    _, _, arrays, feats = split_features(untrained_run, verbose=False)
    probe = linear_probe(feats["train"], arrays["train"].labels, feats["val"], val.labels, 10)
    assert np.mean(predictions == val.labels) == pytest.approx(probe["top1"])


def test_zoo_plot_a_shipped_model_needs_data_and_writes_beside_the_cwd(tmp_path, monkeypatch, capsys):
    from trainers.plots import main
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--data is required when plotting a model"):
        main(["embedding", "rotation_resnet18w025_cifar10"])
    assert main(["embedding", "rotation_resnet18w025_cifar10", "--data", DATA, "--n", "12"]) == 0
    out = tmp_path / "plots" / "rotation_resnet18w025_cifar10-embedding.png"
    assert capsys.readouterr().out.strip().endswith(f"wrote {out}")
    _check_png(out, 900, 700)
