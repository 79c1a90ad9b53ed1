"""Every encoder that ships with the package has the registry's fields and name pattern,
loads offline by name, verifies its hash, reproduces its recorded fingerprint, has a model
card whose code runs, and is listed in an up-to-date MODEL_CARDS.md. The tests that take a
preset run over zoo.list_models(), so presets added later are covered without edits here."""
import json
import os
import re

import numpy as np
import pytest

import zoo
from export.model_card import model_cards_md, registered_metadata, render_model_card, usage_code
from export.publish import FINGERPRINT_INPUT
from hf_cache import put_in_hf_cache
from selection import slow_except

SHIPPED = ["rotation_resnet18w025_cifar10", "simclr_resnet18w025_cifar10"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_foundation_encoders_ship():
    assert set(SHIPPED) <= set(zoo.list_models())
    assert "simclr_resnet18w025_cifar10" in zoo.list_models(method="simclr")
    assert "rotation_resnet18w025_cifar10" not in zoo.list_models(method="simclr")
    assert set(SHIPPED) <= set(zoo.list_models(dataset="cifar10"))
    assert zoo.list_models(method="rotation", dataset="cifar10") == [
        n for n in zoo.list_models() if zoo.hub.get_metadata(n)["method"] == "rotation"
        and zoo.hub.get_metadata(n)["training"]["dataset"] == "cifar10"]
    assert zoo.list_models(dataset="no-such-data") == [] and zoo.list_models(method="no-such-method") == []


def test_list_models_filters_every_preset():
    names = zoo.list_models()
    assert names == sorted(names)
    for name in names:
        meta = zoo.hub.get_metadata(name)
        assert name in zoo.list_models(method=meta["method"])
        assert name in zoo.list_models(dataset=meta["training"]["dataset"])
        assert name in zoo.list_models(method=meta["method"], dataset=meta["training"]["dataset"])


def test_preset_name_pattern():
    assert zoo.hub.preset_name("simclr", "resnet18", 0.25, "cifar10") == "simclr_resnet18w025_cifar10"
    assert zoo.hub.preset_name("byol", "resnet50", 1.0, "imagenet") == "byol_resnet50_imagenet"
    assert zoo.hub.preset_name("rotation", "resnet18", 0.5, "shapes") == "rotation_resnet18w05_shapes"
    assert zoo.hub.preset_name("mae", "resnet34", 2, "stl10") == "mae_resnet34w2_stl10"


def test_a_preset_not_clearly_above_the_untrained_floor_carries_a_caveat():
    """Design note 21: an encoder whose kNN or linear val top-1 is not at least 1 point above
    the best of the untrained backbone's seeds (which spread over 1.4 points) ships only with a
    caveat (card, MODEL_CARDS.md, load warning)."""
    floor = json.load(open(os.path.join(ROOT, "benchmarks", "results", "random_init_cifar10.json")))
    best = {"knn": max(r["knn_top1"] for r in floor["runs"]), "linear": max(r["linear_top1"] for r in floor["runs"])}
    flagged = []
    for name in zoo.list_models(dataset="cifar10"):
        meta = zoo.hub.get_metadata(name)
        at_floor = any(r["top1"] < best[r["protocol"]] + 0.01 for r in meta["results"] if r["protocol"] in best)
        assert bool(meta.get("caveat")) == at_floor, (
            f"{name}: results {[(r['protocol'], r['top1']) for r in meta['results']]} against the floor {best}; "
            "an encoder at the floor needs a caveat (zoo-export --caveat) and one above it none")
        flagged += [name] if at_floor else []
    for name in flagged:
        with pytest.warns(UserWarning, match=re.escape(zoo.hub.get_metadata(name)["caveat"])):
            zoo.load(name)


_INPUT_KEYS = {"image_size", "value_range", "mean", "std"}
_TRAINING_KEYS = {"dataset", "data", "data_description", "epochs", "batch_size", "images_seen", "minutes", "cpu",
                  "recipe", "command"}


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_has_the_registry_fields(name):
    """One JSON per encoder, with everything the registry promises (see zoo/hub.py)."""
    path = os.path.join(zoo.hub.PRESET_DIR, f"{name}.json")
    assert os.path.exists(path), f"preset {name} must be zoo/presets/{name}.json"
    meta = json.load(open(path))
    assert meta["name"] == name
    assert name == zoo.hub.preset_name(meta["method"], meta["backbone"]["name"], meta["backbone"]["width"],
                                       meta["training"]["dataset"]), "names follow METHOD_BACKBONE[wWIDTH]_DATASET"
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*_[a-z0-9]+_[a-z0-9]+", name)  # method names may hold "_"
    assert meta["method"] in zoo.list_methods()
    assert {"name", "width", "stem"} <= set(meta["backbone"])
    assert _INPUT_KEYS <= set(meta["input"]) and meta["input"]["value_range"] == [0, 255]
    assert len(meta["input"]["mean"]) == 3 and len(meta["input"]["std"]) == 3
    assert _TRAINING_KEYS <= set(meta["training"]), sorted(_TRAINING_KEYS - set(meta["training"]))
    assert meta["training"]["recipe"]["method"] == meta["method"]
    assert meta["results"] and all({"protocol", "dataset", "split", "top1"} <= set(r) for r in meta["results"])
    assert meta["files"] and all(re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) for f in meta["files"].values())
    source = meta["source"]
    assert source["type"] in zoo.hub.SOURCE_TYPES
    assert {"package": set(), "folder": {"path"}, "huggingface": {"repo_id", "revision"}}[source["type"]] <= set(source)
    assert {"features_first_row", "features_mean", "features_std"} <= set(meta["fingerprint"])


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_loads_offline_and_matches_its_fingerprint(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = zoo.load(name)
    meta = encoder.metadata
    spec, split, n = FINGERPRINT_INPUT
    features = np.asarray(encoder(zoo.data.load_arrays(spec, split).images[:n]))
    assert features.shape == (n, meta["feature_dim"])
    np.testing.assert_allclose(features[0, :8], meta["fingerprint"]["features_first_row"], rtol=1e-4, atol=1e-4)
    assert features.mean() == pytest.approx(meta["fingerprint"]["features_mean"], rel=1e-4, abs=1e-5)
    assert features.std() == pytest.approx(meta["fingerprint"]["features_std"], rel=1e-4, abs=1e-5)
    assert name.startswith(f"{meta['method']}_{meta['backbone']['name']}")
    weights = [f for f in meta["files"] if f.endswith(".h5")]
    assert os.path.getsize(os.path.join(zoo.hub.PRESET_DIR, weights[0])) < 8_000_000
    assert {r["protocol"] for r in meta["results"]} == {"knn", "linear"}
    assert all(r["split"].startswith("val") and 0.1 < r["top1"] <= 1 for r in meta["results"])


# Every preset shares the export code; one by default, all with -m slow (~14 s each).
@pytest.mark.parametrize("name", slow_except(zoo.list_models(), keep=("simclr_resnet18w025_cifar10",)))
def test_preset_round_trips_through_every_export_format(name, tmp_path):
    """export -> load: the Keras preset, both SavedModel signatures, TFLite and ONNX give the
    shipped encoder's features (max |difference| 1e-4 of the features' scale when above 1;
    measured ~1e-6 of it)."""
    import tensorflow as tf
    from export.cli import export_preset
    from export.saved_model import converted_tolerance, run_onnx, run_tflite
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    encoder = zoo.load(name)
    images = zoo.data.load_arrays("shapes", "val").images[:8]
    reference = encoder(images).numpy()
    folder = export_preset(name, to=str(tmp_path), tflite=True, onnx=True)
    np.testing.assert_array_equal(zoo.load(folder)(images).numpy(), reference)
    served = tf.saved_model.load(os.path.join(folder, "saved_model"))
    outputs = {
        "saved_model uint8": served.signatures["serving_default"](images=tf.constant(images))["features"],
        "saved_model float32": served.signatures["serving_float"](images=tf.constant(images, tf.float32))["features"],
        "tflite": run_tflite(os.path.join(folder, "model.tflite"), images),
        "onnx": run_onnx(os.path.join(folder, "model.onnx"), images),
    }
    for kind, out in outputs.items():
        np.testing.assert_allclose(np.asarray(out), reference, rtol=0, atol=converted_tolerance(reference), err_msg=kind)


def test_zoo_export_takes_a_registered_name(tmp_path, capsys):
    from export.cli import main
    name = zoo.list_models()[0]
    main([name, "--to", str(tmp_path), "--no-saved-model"])
    assert str(tmp_path / name) in capsys.readouterr().out
    meta = json.load(open(tmp_path / name / "metadata.json"))
    assert meta["source"] == {"type": "folder", "path": "."} and "fingerprint" not in meta
    assert meta["results"] == zoo.hub.get_metadata(name)["results"]
    with pytest.raises(SystemExit, match="--name is required"):
        main([str(tmp_path), "--to", str(tmp_path)])


def test_tampered_preset_is_refused(tmp_path, monkeypatch):
    name = zoo.list_models()[0]
    meta = zoo.hub.get_metadata(name)
    rel = next(iter(meta["files"]))
    (tmp_path / "weights").mkdir()
    data = bytearray(open(os.path.join(zoo.hub.PRESET_DIR, rel), "rb").read())
    data[-50] ^= 0xFF
    (tmp_path / rel).write_bytes(bytes(data))
    (tmp_path / f"{name}.json").write_text(json.dumps(meta))
    monkeypatch.setattr(zoo.hub, "PRESET_DIR", str(tmp_path))
    with pytest.raises(zoo.hub.HashMismatchError, match=rel.split("/")[-1]):
        zoo.load(name)


def _card_code(name):
    meta = zoo.hub.get_metadata(name)
    card = render_model_card(meta)
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert code == usage_code(meta) and f'zoo.load("{name}"' in code
    for section in ("## How to load and fine-tune", "## Training data and recipe", "## Results", "## Compute",
                    "## Limitations and biases"):
        assert section in card
    return meta, code


def _run_card_code(name):
    meta, code = _card_code(name)
    scope = {}
    exec(compile(code, f"model card of {name}", "exec"), scope)
    assert scope["features"].shape == (2, meta["feature_dim"])
    assert scope["model"].optimizer.iterations.numpy() == 1


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_preset_card_has_its_own_code_and_sections(name):
    _card_code(name)


def test_preset_model_card_code_runs():
    """The cards' code differs only in the name (checked above for every preset), so the default
    suite runs one card; `pytest -m slow` runs them all (~20 s each)."""
    _run_card_code(zoo.list_models()[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.list_models())
def test_every_preset_model_card_code_runs(name):
    _run_card_code(name)


def test_preset_whose_files_live_on_the_hub_loads_from_the_cache(tmp_path, monkeypatch):
    """A registry entry with source huggingface (repo id + pinned revision) resolves through the
    local Hugging Face cache when offline."""
    name = SHIPPED[1]
    meta = zoo.hub.get_metadata(name)
    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    rel = next(iter(meta["files"]))
    (repo / rel).write_bytes(open(os.path.join(zoo.hub.PRESET_DIR, rel), "rb").read())
    (repo / "metadata.json").write_text(json.dumps(meta))
    commit = put_in_hf_cache(tmp_path / "hf" / "hub", "zoo-org/" + name, repo)
    presets = tmp_path / "presets"
    presets.mkdir()
    hub_meta = dict(meta, source={"type": "huggingface", "repo_id": "zoo-org/" + name, "revision": commit})
    (presets / f"{name}.json").write_text(json.dumps(hub_meta))
    monkeypatch.setattr(zoo.hub, "PRESET_DIR", str(presets))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    images = zoo.data.load_arrays("shapes", "val").images[:4]
    features = zoo.load(name)(images).numpy()
    np.testing.assert_allclose(features[0, :8], meta["fingerprint"]["features_first_row"], rtol=1e-4, atol=1e-4)
    assert 'zoo.load("hf://zoo-org/' + name + "@" + commit in render_model_card(hub_meta)
    # a folder source: files beside the JSON in another directory
    folder_meta = dict(meta, source={"type": "folder", "path": "../repo"})
    (presets / f"{name}.json").write_text(json.dumps(folder_meta))
    np.testing.assert_allclose(zoo.load(name)(images).numpy(), features, rtol=0, atol=0)


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'simclr_resnet18w025_cifar10'"):
        zoo.load("simclr_resnet18w025_cifar")


def test_model_cards_md_is_up_to_date():
    with open(os.path.join(ROOT, "MODEL_CARDS.md")) as f:
        assert f.read() == model_cards_md(), \
            "MODEL_CARDS.md is stale: run `python -m export.model_card`"
