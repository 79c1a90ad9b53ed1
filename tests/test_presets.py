"""Every encoder that ships with the package loads offline by name, verifies its hash,
reproduces its recorded fingerprint, and is listed in an up-to-date MODEL_CARDS.md."""
import json
import os

import numpy as np
import pytest

import zoo
from export.model_card import registered_metadata, render_model_cards_md
from export.publish import FINGERPRINT_INPUT

SHIPPED = ["rotation_resnet18w025_cifar10", "simclr_resnet18w025_cifar10"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_foundation_encoders_ship():
    assert set(SHIPPED) <= set(zoo.list_models())
    assert zoo.list_models(method="simclr") == ["simclr_resnet18w025_cifar10"]
    assert zoo.list_models(dataset="cifar10") == SHIPPED
    assert zoo.list_models(dataset="imagenet") == []


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
    assert name.startswith(f"{meta['method']}_{meta['backbone']['name']}")
    weights = [f for f in meta["files"] if f.endswith(".h5")]
    assert os.path.getsize(os.path.join(zoo.hub.PRESET_DIR, weights[0])) < 8_000_000
    assert {r["protocol"] for r in meta["results"]} == {"knn", "linear"}
    assert all(r["split"].startswith("val") and 0.1 < r["top1"] <= 1 for r in meta["results"])


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


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'simclr_resnet18w025_cifar10'"):
        zoo.load("simclr_resnet18w025_cifar")


def test_model_cards_md_is_up_to_date():
    with open(os.path.join(ROOT, "MODEL_CARDS.md")) as f:
        assert f.read() == render_model_cards_md(registered_metadata()), \
            "MODEL_CARDS.md is stale: run `python -m export.model_card`"
