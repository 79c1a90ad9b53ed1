"""Bad metadata.json files, bad images and oversized inputs are refused (or warned about) with a
message naming the file, the field or the fix, instead of a raw traceback, a wrong result or an
out-of-memory crash. The export folders here are copies of a shipped preset (no training)."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import zoo
import zoo.encoder
from export import publish
from zoo.data.image_files import list_images, read_image
from zoo.data.sources import read_folder

PRESET = "simclr_resnet18w025_cifar10"  # ResNet-18 width 0.25, 32 px, 128 features


def make_export(folder, meta_changes=None, weights_file=None):
    """An export folder (metadata.json + model.weights.h5) copied from PRESET, with top-level
    metadata fields replaced by `meta_changes`; returns (folder, metadata path)."""
    os.makedirs(folder)
    meta = json.loads(json.dumps(zoo.hub.get_metadata(PRESET)))
    (rel,) = meta["files"]
    shutil.copyfile(weights_file or os.path.join(zoo.hub.PRESET_DIR, rel), os.path.join(folder, "model.weights.h5"))
    meta.pop("source")
    meta.pop("fingerprint", None)
    meta["files"] = {"model.weights.h5": zoo.hub.file_record(os.path.join(folder, "model.weights.h5"))}
    meta.update(meta_changes or {})
    path = os.path.join(folder, "metadata.json")
    with open(path, "w") as f:
        json.dump(meta, f)
    return str(folder), path


def test_the_copied_export_loads(tmp_path):
    folder, _ = make_export(tmp_path / "good")
    assert zoo.load(folder)(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 128)


@pytest.mark.parametrize("name", ["../escaped", "sub/escaped", "/tmp/escaped"])
def test_a_name_with_a_path_is_refused_by_publish_and_load(tmp_path, name):
    folder, meta_path = make_export(tmp_path / "export", {"name": name})
    presets = tmp_path / "presets" / "inner"
    with pytest.raises(ValueError, match=re.escape(meta_path) + ": name .* not a registry name"):
        publish.register_in_package(folder, preset_dir=str(presets))
    with pytest.raises(SystemExit):
        publish.main([folder])
    assert not os.path.exists(presets)
    assert not any(p.name.startswith("escaped") for p in tmp_path.rglob("*"))  # nothing written anywhere
    with pytest.raises(ValueError, match=re.escape(meta_path) + ": name .* not a valid encoder name"):
        zoo.load(folder)


@pytest.mark.parametrize("outside", ["../outside.weights.h5", "ABSOLUTE"])
def test_a_files_entry_outside_the_folder_is_refused(tmp_path, outside):
    folder, meta_path = make_export(tmp_path / "export")
    target = tmp_path / "outside.weights.h5"
    shutil.copyfile(os.path.join(folder, "model.weights.h5"), target)  # valid weights: only the path is bad
    rel = str(target) if outside == "ABSOLUTE" else outside
    meta = json.load(open(meta_path))
    meta["files"] = {rel: zoo.hub.file_record(str(target))}
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(ValueError, match="files entry .*(leads outside|not a relative path)"):
        zoo.load(folder)


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path):
    folder, meta_path = make_export(tmp_path / "export")
    shutil.move(os.path.join(folder, "model.weights.h5"), tmp_path / "elsewhere.weights.h5")
    os.symlink(tmp_path / "elsewhere.weights.h5", os.path.join(folder, "model.weights.h5"))
    with pytest.raises(ValueError, match="leads outside"):
        zoo.load(folder)


@pytest.mark.parametrize("field, change", [
    ("input.mean", lambda m: m["input"].update(mean=[float("nan"), 0.4, 0.4])),
    ("input.mean", lambda m: m["input"].update(mean=[float("inf"), 0.4, 0.4])),
    ("input.std", lambda m: m["input"].update(std=[0.0, 0.2, 0.2])),
    ("input.std", lambda m: m["input"].update(std=[-0.2, 0.2, 0.2])),
    ("backbone.width", lambda m: m["backbone"].update(width=0)),
    ("backbone.width", lambda m: m["backbone"].update(width=zoo.hub.MAX_WIDTH * 2)),  # would not fit in memory
    ("backbone.width", lambda m: m["backbone"].update(width=float("nan"))),
    ("input.image_size", lambda m: m["input"].update(image_size=zoo.hub.MAX_IMAGE_SIZE + 1)),
    ("input.image_size", lambda m: m["input"].update(image_size=-32)),
    ("input.image_size", lambda m: m["input"].update(image_size=True)),
    ("feature_dim", lambda m: m.update(feature_dim=999)),  # the preset's backbone gives 128
    ("feature_dim", lambda m: m.update(feature_dim="128")),
    ("format_version", lambda m: m.update(format_version="2")),
])
def test_bad_fields_are_refused_naming_the_file_and_field(tmp_path, field, change):
    folder, meta_path = make_export(tmp_path / "export")
    meta = json.load(open(meta_path))
    change(meta)
    json.dump(meta, open(meta_path, "w"))  # NaN and Infinity are written as JSON extensions, read back
    with pytest.raises(ValueError, match=re.escape(f"{meta_path}: metadata field {field}")):
        zoo.load(folder)


def test_weights_of_another_width_name_the_first_mismatching_layer(tmp_path):
    """Weights of width 0.125 (16 -> 8 channels in the stem) under metadata of width 0.25."""
    meta = zoo.hub.get_metadata(PRESET)
    narrow = zoo.hub.build_encoder({**meta, "backbone": {**meta["backbone"], "width": 0.125}, "feature_dim": 64})
    narrow.save_weights(str(tmp_path / "narrow.weights.h5"))
    folder, meta_path = make_export(tmp_path / "export", weights_file=str(tmp_path / "narrow.weights.h5"))
    with pytest.raises(ValueError, match=r"model.weights.h5: weights of layer '.*' .* have shape \(8,\), but the "
                                         "encoder built from " + re.escape(meta_path) + r" expects shape \(16,\)"):
        zoo.load(folder)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a valid JSON metadata file"),
    ("[1, 2]", "holds a JSON list, expected an object"),
    (b"\xff\xfe\x00", "not a valid JSON metadata file"),
])
def test_unreadable_metadata_names_the_file(tmp_path, content, message):
    folder, meta_path = make_export(tmp_path / "export")
    with open(meta_path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    for call in (zoo.load, zoo.describe, publish.register_in_package):
        with pytest.raises(ValueError, match=re.escape(meta_path) + ": " + message):
            call(folder)


def test_load_of_none_says_what_is_accepted():
    with pytest.raises(TypeError, match="registered encoder name .* export folder .* 'hf://org/repo', got None"):
        zoo.load(None)
    with pytest.raises(TypeError, match="got 3"):
        zoo.describe(3)


def test_hf_hint_quotes_the_repo_for_the_shell():
    error = zoo.hub._hf_missing("org/x;touch pwned@v 1", "/cache", True, "cache miss")
    assert "hf download 'org/x;touch pwned' --revision 'v 1'" in str(error)


@pytest.fixture(scope="module")
def encoder():
    return zoo.load(PRESET)


def test_an_image_without_pixels_is_refused(encoder):
    with pytest.raises(ValueError, match=r"shape \(1, 0, 0, 3\) have no pixels"):
        encoder(np.zeros((1, 0, 0, 3), np.uint8))


def test_a_nested_list_of_pixels_is_accepted(encoder):
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(encoder(images.tolist())), np.asarray(encoder(images)))


@pytest.mark.parametrize("value, message", [
    (np.nan, "NaN or infinite values"),
    (np.inf, "NaN or infinite values"),
    (300.0, "from 0 to 300, outside 0..255"),
    (-5.0, "from -5 to 0, outside 0..255"),
])
def test_non_finite_or_out_of_range_pixels_warn(value, message):
    encoder = zoo.load(PRESET)  # a fresh encoder: each warning is given once per encoder
    images = np.zeros((1, 8, 8, 3), np.float32)
    images[0, 0, 0, 0] = value
    with pytest.warns(UserWarning, match=message):
        encoder(images)


def test_images_over_the_pixel_limit_are_refused(monkeypatch, encoder):
    monkeypatch.setattr(zoo.encoder, "MAX_PIXELS_PER_IMAGE", 40 * 40)
    native = zoo.load(PRESET, input_shape=(None, None, 3))
    assert native(np.zeros((1, 40, 40, 3), np.uint8)).shape == (1, 128)  # at the limit: runs
    with pytest.raises(ValueError, match=r"41 x 40 pixels are larger than the 1600 pixels .* input_shape=\(S, S, 3\)"):
        native(np.zeros((1, 41, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=r"input_shape=\(64, 64, 3\): more than 1600 pixels"):
        zoo.load(PRESET, input_shape=(64, 64, 3))
    # in a traced graph the size is known only at run time, and checked then
    traced = tf.function(native, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    assert traced(np.zeros((1, 40, 40, 3), np.uint8)).shape == (1, 128)
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the 1600 pixels per image"):
        traced(np.zeros((1, 41, 40, 3), np.uint8))
    assert encoder(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 128)  # resized to 32 x 32 first: fine


@pytest.mark.parametrize("extension, pil_format", [(".webp", "WEBP"), (".tiff", "TIFF"), (".tif", "TIFF")])
def test_webp_and_tiff_files_are_listed_and_decoded(tmp_path, extension, pil_format):
    """Both for zoo-embed (list_images, read_image) and for training folders (read_folder);
    the reference is the array Pillow wrote (lossless)."""
    pixels = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    os.makedirs(tmp_path / "cats")
    path = tmp_path / "cats" / f"a{extension}"
    Image.fromarray(pixels).save(path, pil_format, lossless=True)
    assert list_images(str(tmp_path)) == ([os.path.join("cats", f"a{extension}")], [0], ["cats"])
    np.testing.assert_array_equal(read_image(str(path), None), pixels.astype(np.float32))
    arrays = read_folder(str(tmp_path), f"folder:{tmp_path}")
    np.testing.assert_array_equal(arrays.images, pixels[None])


def test_an_unreadable_tiff_reads_as_none_like_other_unreadable_files(tmp_path):
    (tmp_path / "bad.tiff").write_bytes(b"II*\x00" + b"\x00" * 20)
    assert read_image(str(tmp_path / "bad.tiff"), None) is None
