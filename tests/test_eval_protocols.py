"""The mlp and finetune protocols of zoo-eval (issue 20): the MLP probe against the linear probe
on data no linear classifier separates and against a numpy forward pass of its own weights; the
class-balanced label subsets against hand-counted sizes; the finetune protocol end to end on
`shapes` with a width-0.125 encoder."""
import json
import os

import numpy as np
import pytest

from run_folders import untrained_run_folder
from zoo.eval.linear import linear_probe
from zoo.eval.mlp import mlp_probe
from zoo.eval.subsets import balanced_subset, subset_fingerprint

# ----------------------------------------------------------------------------------- MLP probe


def _rings(rng, n, noise_dims=2):
    """Three concentric rings (radius 1, 2, 3: the class) in the first two dimensions, plus
    pure-noise dimensions. Every class surrounds the origin, so no linear classifier beats
    chance by much; a ReLU layer separates the radii."""
    labels = rng.integers(0, 3, n)
    radius = 1.0 + labels + 0.1 * rng.normal(size=n)
    angle = rng.uniform(0, 2 * np.pi, n)
    rings = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return np.concatenate([rings, 0.3 * rng.normal(size=(n, noise_dims))], axis=1).astype(np.float32), labels


def test_mlp_probe_separates_rings_that_the_linear_probe_cannot(rng):
    x, y = _rings(rng, 600)
    val_x, val_y = _rings(rng, 300)
    linear = linear_probe(x, y, val_x, val_y, 3)["top1"]
    mlp = mlp_probe(x, y, val_x, val_y, 3)
    assert linear < 0.5, linear  # chance is 1/3
    assert mlp["top1"] > 0.9 and mlp["top1"] > linear + 0.4, (mlp, linear)
    assert mlp["steps"] == 1000 and mlp["batch_size"] == 256 and mlp["hidden_units"] == 512  # min_steps applies
    assert "top5" not in mlp  # only for 10 classes or more


def _numpy_forward(params, features):
    """The probe's classifier written out: standardise with the train statistics, ReLU layer, logits."""
    x = (features.astype(np.float64) - params["mean"]) / params["std"]
    hidden = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    return hidden @ params["w2"] + params["b2"]


def test_mlp_probe_reports_the_accuracy_of_its_own_predictions(rng):
    # 12 classes (so top-5 is reported), labels only weakly tied to the features: the accuracies
    # are neither 0 nor 1, and a wrong count would show.
    centres = rng.normal(size=(12, 5))
    y, val_y = rng.integers(0, 12, 400), rng.integers(0, 12, 150)
    x = (centres[y] + 2.0 * rng.normal(size=(400, 5))) * 10 + 3  # scale and offset: standardisation matters
    val_x = (centres[val_y] + 2.0 * rng.normal(size=(150, 5))) * 10 + 3
    result, params = mlp_probe(x, y, val_x, val_y, 12, hidden_units=16, epochs=5, min_steps=0, batch_size=64,
                               return_params=True)
    assert result["steps"] == 5 * (400 // 64)
    np.testing.assert_allclose(params["mean"], x.mean(axis=0))
    logits = _numpy_forward(params, val_x)
    top1 = np.mean(np.argmax(logits, axis=1) == val_y)
    top5 = np.mean([val_y[i] in np.argsort(-logits[i])[:5] for i in range(len(val_y))])
    train_logits = _numpy_forward(params, x)
    assert 0.1 < top1 < 0.9 and result["top1"] == pytest.approx(top1, abs=1e-12)
    assert result["top5"] == pytest.approx(top5, abs=1e-12)
    assert result["train_top1"] == pytest.approx(np.mean(np.argmax(train_logits, axis=1) == y), abs=1e-12)
    log_softmax = train_logits - np.log(np.exp(train_logits).sum(axis=1, keepdims=True))
    assert result["train_loss"] == pytest.approx(-np.mean(log_softmax[np.arange(len(y)), y]), rel=1e-5)
    # the same seed gives the same probe
    again = mlp_probe(x, y, val_x, val_y, 12, hidden_units=16, epochs=5, min_steps=0, batch_size=64)
    assert again == result


def test_mlp_probe_rejects_bad_input(rng):
    x = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match=r"train features of shape \(10, 3\) with 9 labels"):
        mlp_probe(x, np.zeros(9, int), x, np.zeros(10, int), 2)
    with pytest.raises(ValueError, match="hidden_units=0"):
        mlp_probe(x, np.zeros(10, int), x, np.zeros(10, int), 2, hidden_units=0)
    with pytest.raises(ValueError, match=r"train labels range from -1 to 1; expected class ids 0\.\.1"):
        mlp_probe(x, np.arange(10) % 3 - 1, x, np.zeros(10, int), 2)


# ------------------------------------------------------------------------ class-balanced subsets


def test_balanced_subset_takes_the_rounded_share_of_each_class():
    # class sizes 200, 50, 7, 1: at 10 % -> 20, 5, 1 (0.7 rounds up), 1 (0.1: at least one);
    # at 1 % -> 2, 1 (0.5: halves round up), 1 (0.07: at least one), 1.
    labels = np.repeat([0, 1, 2, 3], [200, 50, 7, 1])
    labels = labels[np.random.default_rng(5).permutation(len(labels))]
    for fraction, sizes in ((0.1, [20, 5, 1, 1]), (0.01, [2, 1, 1, 1]), (1.0, [200, 50, 7, 1]), (0.3, [60, 15, 2, 1])):
        subset = balanced_subset(labels, fraction, seed=0)
        assert subset.dtype == np.int64 and np.all(np.diff(subset) > 0)  # sorted, no duplicates
        assert np.bincount(labels[subset], minlength=4).tolist() == sizes, fraction


def test_balanced_subset_depends_on_the_seed_only():
    labels = np.tile(np.arange(10), 100)  # 100 per class
    first = balanced_subset(labels, 0.1, seed=0)
    np.testing.assert_array_equal(balanced_subset(labels.copy(), 0.1, seed=0), first)
    other = balanced_subset(labels, 0.1, seed=1)
    assert len(other) == len(first) == 100 and not np.array_equal(other, first)
    assert set(balanced_subset(labels, 0.01, seed=0)) <= set(first)  # smaller fractions are nested
    assert subset_fingerprint(first) == subset_fingerprint(first.copy()) != subset_fingerprint(other)


@pytest.mark.parametrize("labels,fraction,message", [
    ([0, 1, -1], 0.1, "no negative, unlabelled"), ([[0, 1]], 0.1, "1-D"), ([], 0.1, "non-empty"),
    ([0.0, 1.0], 0.1, "dtype float64"), ([0, 1], 0.0, "fraction=0.0"), ([0, 1], 1.5, "fraction=1.5"),
    ([0, 1], True, "fraction=True")])
def test_balanced_subset_rejects_bad_input(labels, fraction, message):
    with pytest.raises(ValueError, match=message):
        balanced_subset(np.asarray(labels), fraction)


# ------------------------------------------------------------------------------ fine-tuning


def _small_encoder():
    """An ImageEncoder on a two-layer conv net: the finetune protocol's bookkeeping, fast."""
    import keras

    from zoo.encoder import ImageEncoder
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(h), name="small")
    return ImageEncoder(backbone, 32)


def test_finetune_evaluate_trains_copies_from_both_starts_on_the_same_subsets():
    import zoo
    from zoo.eval.finetune_probe import finetune_evaluate
    train, val = zoo.data.load_arrays(DATA, "train"), zoo.data.load_arrays(DATA, "val")
    encoder = _small_encoder()
    before = [w.copy() for w in encoder.get_weights()]
    result = finetune_evaluate(encoder, train.images, train.labels, val.images, val.labels, train.num_classes,
                               fractions=(0.05, 0.5), steps=3, batch_size=16, verbose=False)
    for got, start in zip(encoder.get_weights(), before):  # the encoder given is not the one trained
        np.testing.assert_array_equal(got, start)
    assert [entry["fraction"] for entry in result["subsets"]] == [0.05, 0.5]
    assert result["steps"] == 3 and result["batch_size"] == 16 and result["seed"] == 0
    for entry in result["subsets"]:
        subset = balanced_subset(train.labels, entry["fraction"], seed=0)  # from the labels alone
        assert entry["labelled_images"] == len(subset) and entry["subset_sha256"] == subset_fingerprint(subset)
        for init in ("encoder", "random_init"):
            correct = entry[init]["top1"] * len(val)  # a count of val images
            assert 0 <= round(correct) <= len(val) and correct == pytest.approx(round(correct))
            assert np.isfinite(entry[init]["train_loss"]) and entry[init]["train_loss"] > 0
        assert entry["gain"] == pytest.approx(entry["encoder"]["top1"] - entry["random_init"]["top1"])
    # 5 % of 17 images per class rounds to 1: 10 images, one batch of 10 (smaller than batch_size)
    assert result["subsets"][0]["labelled_images"] == 10
    # the two starts differ (a copy of the encoder, a fresh initialisation), so do their runs
    first = result["subsets"][1]
    assert first["encoder"]["train_loss"] != first["random_init"]["train_loss"]
    again = finetune_evaluate(encoder, train.images, train.labels, val.images, val.labels, train.num_classes,
                              fractions=(0.05, 0.5), steps=3, batch_size=16, verbose=False)
    assert _without_seconds(again) == _without_seconds(result)  # seeded: the same numbers


def _without_seconds(result):
    """The subsets' entries without the run times, which vary."""
    entries = []
    for entry in result["subsets"]:
        entries.append(dict(entry, **{init: {k: v for k, v in entry[init].items() if k != "seconds"}
                                      for init in ("encoder", "random_init")}))
    return entries


# --------------------------------------------------------------------------- zoo-eval protocols

DATA = "shapes?n=200"


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    return untrained_run_folder(str(tmp_path_factory.mktemp("protocols") / "run"), DATA)


@pytest.mark.slow  # 12-18 s measured beside a training run, mostly tracing a ResNet-18 training step
def test_zoo_eval_finetune_reports_both_initialisations_per_fraction(untrained_run, capsys):
    import zoo
    from trainers.evaluate import main
    earlier = os.path.join(untrained_run, "eval.json")  # the model card's report stays as it was
    with open(earlier, "w") as f:
        json.dump({"knn": {"top1": 0.5}}, f)
    main([untrained_run, "--protocol", "finetune", "--label-fractions", "0.1,0.5", "--finetune-steps", "2"])
    assert json.load(open(earlier)) == {"knn": {"top1": 0.5}}
    report = json.load(open(os.path.join(untrained_run, "eval-finetune.json")))
    train = zoo.data.load_arrays(DATA, "train")
    finetune = report["finetune"]
    assert [s["fraction"] for s in finetune["subsets"]] == [0.1, 0.5] and finetune["steps"] == 2
    for entry in finetune["subsets"]:
        # the subset is the one balanced_subset draws from the labels alone: any encoder gets it
        subset = balanced_subset(train.labels, entry["fraction"], seed=0)
        assert entry["labelled_images"] == len(subset) and entry["subset_sha256"] == subset_fingerprint(subset)
        for init in ("encoder", "random_init"):
            top1 = entry[init]["top1"]
            assert 0.0 <= top1 <= 1.0 and np.isfinite(entry[init]["train_loss"])
            correct = top1 * report["val_images"]  # a count of val images
            assert correct == pytest.approx(round(correct))
        assert entry["gain"] == pytest.approx(entry["encoder"]["top1"] - entry["random_init"]["top1"])
    assert "knn" not in report and "feature_dim" not in report
    assert not os.path.exists(os.path.join(untrained_run, "features"))  # no features extracted
    out = capsys.readouterr().out
    assert "fine-tuning random init on 50% of the labels" in out and "finetune 10% of the labels" in out


def test_zoo_eval_mlp_alone_writes_eval_mlp_json(untrained_run, capsys):
    from trainers.evaluate import main
    main([untrained_run, "--protocol", "mlp"])
    report = json.load(open(os.path.join(untrained_run, "eval-mlp.json")))
    assert 0.0 <= report["mlp"]["top1"] <= 1.0 and report["mlp"]["hidden_units"] == 512
    assert "linear" not in report and report["feature_dim"] > 0
    assert "mlp     top-1 =" in capsys.readouterr().out


def test_report_file_names(tmp_path):
    from trainers.evaluate import write_report
    names = {}
    for protocols in (["knn", "mlp"], ["mlp"], ["finetune"], ["mlp", "finetune"], ["cluster"]):
        report = {"run": str(tmp_path), **{p: {} for p in protocols}}
        names["+".join(protocols)] = os.path.basename(write_report(report, "zoo-eval"))
    assert names == {"knn+mlp": "eval.json", "mlp": "eval-mlp.json", "finetune": "eval-finetune.json",
                     "mlp+finetune": "eval-mlp-finetune.json", "cluster": "eval-cluster.json"}
    report = {"run": str(tmp_path), "layer": "stage2", "mlp": {}}
    assert os.path.basename(write_report(report, "zoo-eval")) == "eval-stage2-mlp.json"


def test_zoo_eval_rejects_bad_finetune_options(untrained_run, tmp_path, capsys):
    from trainers.evaluate import evaluate, main
    with pytest.raises(SystemExit, match=r"Unknown protocol\(s\) \['fine-tune'\]; choose from \['knn', 'linear', "
                                         r"'mlp', 'cluster', 'finetune'\]"):
        main([untrained_run, "--protocol", "mlp,fine-tune", "--out", str(tmp_path / "eval.json")])
    assert not (tmp_path / "eval.json").exists()
    for bad in ("0", "0.1,abc", "0.1,0.1", "2"):
        with pytest.raises(SystemExit):
            main([untrained_run, "--protocol", "finetune", "--label-fractions", bad])
        assert "expected distinct fractions in (0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--layer stage2 applies to the frozen-feature protocols"):
        evaluate(untrained_run, protocols=["finetune"], layer="stage2", verbose=False)
    with pytest.raises(ValueError, match="steps=0"):
        evaluate(untrained_run, protocols=["finetune"], finetune_steps=0, verbose=False)
