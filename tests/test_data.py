"""Tests of zoo.data: the generated shapes set, image folders, CIFAR-10 JPEGs, tfds, errors."""
import io
import os
import tarfile
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf

from zoo.data import DataError, ImageArrays, load, load_arrays, shapes, sources

CIFAR_TARBALL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                             "cifar10-train-jpeg.tar.gz")


def _encode(image, fmt):
    encoded = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image, quality=95)
    return encoded.numpy()


def _write_image(path, colour, hw=(8, 8), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.broadcast_to(np.asarray(colour, np.uint8), (*hw, 3))
    path.write_bytes(_encode(image, fmt or path.suffix.lstrip(".")))


def _row_set(images):
    return {image.tobytes() for image in images}


# ---------------------------------------------------------------- shapes


def test_shapes_default_splits_are_balanced_disjoint_and_complete():
    train, val, every = (load_arrays("shapes", split) for split in ("train", "val", "all"))
    assert (len(train), len(val), len(every)) == (5000, 1000, 6000)
    for part in (train, val, every):
        assert isinstance(part, ImageArrays) and part.name == "shapes"
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (32, 32, 3)
        assert part.labels.dtype == np.int32 and part.labels.shape == (len(part),)
        assert part.num_classes == 10 and part.image_size == 32
    assert np.bincount(train.labels).tolist() == [500] * 10
    assert np.bincount(val.labels).tolist() == [100] * 10
    # "all" is train then val, and no image is in both.
    np.testing.assert_array_equal(every.images, np.concatenate([train.images, val.images]))
    np.testing.assert_array_equal(every.labels, np.concatenate([train.labels, val.labels]))
    assert len(_row_set(every.images)) == 6000
    assert not _row_set(train.images) & _row_set(val.images)


def test_shapes_are_deterministic_per_seed():
    a_images, a_labels = shapes.generate(200, 32, seed=1)
    b_images, b_labels = shapes.generate(200, 32, seed=1)
    c_images, _ = shapes.generate(200, 32, seed=2)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert np.mean(a_images != c_images) > 0.5


def test_shapes_options():
    small = load_arrays("shapes?n=100&size=48&seed=3", "all")
    assert small.images.shape == (100, 48, 48, 3)
    assert np.bincount(small.labels).tolist() == [10] * 10
    val = load_arrays("shapes?n=100&size=48&seed=3", "val")
    assert np.bincount(val.labels, minlength=10).tolist() == [1] * 10  # 10 // 6 per class


def test_shapes_objects_lie_inside_and_stand_out():
    images, labels, masks = shapes.generate(500, 32, seed=0, return_masks=True)
    rows, cols = masks.any(2), masks.any(1)
    border = rows[:, 0] | rows[:, -1] | cols[:, 0] | cols[:, -1]
    assert not border.any(), "objects must lie fully inside the image"
    area = masks.mean(axis=(1, 2))
    assert area.min() > 0.03 and area.max() < 0.7
    pixels = images.astype(np.float32)
    inside = (pixels * masks[..., None]).sum((1, 2)) / masks.sum((1, 2))[:, None]
    outside = (pixels * ~masks[..., None]).sum((1, 2)) / (~masks).sum((1, 2))[:, None]
    assert np.percentile(np.linalg.norm(inside - outside, axis=1), 5) > 40


def test_shapes_colour_does_not_give_the_class_away():
    """Nearest-class-mean on the mean colour of an image is close to chance (10%)."""
    data = load_arrays("shapes", "all")
    colour = data.images.reshape(len(data), -1, 3).mean(1)
    half = len(data) // 2
    means = np.stack([colour[:half][data.labels[:half] == c].mean(0) for c in range(10)])
    guess = np.argmin(np.linalg.norm(colour[half:, None] - means[None], axis=-1), axis=1)
    assert np.mean(guess == data.labels[half:]) < 0.2


def test_shapes_classes_are_upright_and_not_rotations_of_each_other():
    """A class template differs clearly from its own 90/180/270 degree rotations and from
    every rotation of every other class (a symmetric shape would give IoU ~ 1)."""
    masks = [shapes.template(c, 48) >= 0.5 for c in range(len(shapes.CLASS_NAMES))]

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    for c, mask in enumerate(masks):
        assert mask.mean() > 0.1
        for k in (1, 2, 3):
            assert iou(mask, np.rot90(mask, k)) < 0.75, (shapes.CLASS_NAMES[c], k)
        for d, other in enumerate(masks):
            if d != c:
                for k in range(4):
                    assert iou(mask, np.rot90(other, k)) < 0.85, (c, d, k)


def test_load_gives_a_dataset_of_uint8_images_and_int32_labels():
    ds = load("shapes?n=40", "val")
    assert ds.element_spec == (tf.TensorSpec((32, 32, 3), tf.uint8), tf.TensorSpec((), tf.int32))
    assert int(ds.cardinality()) == len(load_arrays("shapes?n=40", "val"))


# ---------------------------------------------------------------- folder:

COLOURS = {"ant": (250, 10, 10), "bee": (10, 250, 10), "cat": (10, 10, 250)}


@pytest.fixture
def folder(tmp_path):
    """ant: 4 JPEGs, bee: 1 PNG, cat: 5 PNGs (one in a sub-folder), each a solid class colour."""
    root = tmp_path / "pets"
    for i in range(4):
        _write_image(root / "ant" / f"{i}.jpg", COLOURS["ant"])
    _write_image(root / "bee" / "only.PNG", COLOURS["bee"], fmt="png")
    for i in range(4):
        _write_image(root / "cat" / f"{i}.png", COLOURS["cat"])
    _write_image(root / "cat" / "more" / "4.png", COLOURS["cat"])
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


def _class_of(image):
    return min(COLOURS, key=lambda c: np.abs(image.mean((0, 1)) - COLOURS[c]).sum())


def test_folder_classes_labels_and_split(folder):
    every = load_arrays(f"folder:{folder}", "all")
    assert every.class_names == ["ant", "bee", "cat"] and every.name == "pets"
    assert every.images.shape == (10, 8, 8, 3)
    for image, label in zip(every.images, every.labels):
        assert _class_of(image) == every.class_names[label]
    train, val = load_arrays(f"folder:{folder}", "train"), load_arrays(f"folder:{folder}", "val")
    # 10% per class, at least one when a class has two or more images.
    assert np.bincount(val.labels, minlength=3).tolist() == [1, 0, 1]
    assert np.bincount(train.labels, minlength=3).tolist() == [3, 1, 4]
    half = load_arrays(f"folder:{folder}?val=0.5", "val")
    assert np.bincount(half.labels, minlength=3).tolist() == [2, 0, 2]


def test_folder_resizes_mixed_sizes(tmp_path):
    root = tmp_path / "mixed"
    _write_image(root / "a" / "0.png", (200, 100, 50), hw=(8, 8))
    _write_image(root / "a" / "1.png", (200, 100, 50), hw=(12, 20))
    _write_image(root / "b" / "0.png", (10, 20, 30), hw=(5, 7))
    first_size = load_arrays(f"folder:{root}", "all")
    assert first_size.images.shape == (3, 8, 8, 3)
    fixed = load_arrays(f"folder:{root}?size=16", "all")
    assert fixed.images.shape == (3, 16, 16, 3)
    for data in (first_size, fixed):  # a solid colour stays that colour
        assert (data.images[data.labels == 0] == [200, 100, 50]).all()
        assert (data.images[data.labels == 1] == [10, 20, 30]).all()


def test_folder_skips_unreadable_files_with_one_warning(folder):
    (folder / "ant" / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "bee" / "text.png").write_text("this is not a PNG")
    for _ in ("decoded", "cached"):  # the cached arrays remember what was skipped
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = load_arrays(f"folder:{folder}", "all")
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1, messages
        assert "skipped 2 unreadable files" in messages[0] and str(folder) in messages[0]
        assert os.path.join("ant", "broken.jpg") in messages[0]  # the first one, in sorted order
        assert len(data) == 10


def test_folder_cache_hit_does_not_decode(folder, monkeypatch):
    first = load_arrays(f"folder:{folder}", "all")
    cache = os.path.join(os.environ["ZOO_CACHE_DIR"], "data")  # zoo.cache.cache_dir("data")
    assert any(f.startswith("folder-") and f.endswith(".npz") for f in os.listdir(cache))
    assert not any(p.suffix == ".npz" for p in folder.rglob("*"))

    def no_decoding(data):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(sources, "decode_image", no_decoding)
    second = load_arrays(f"folder:{folder}", "all")
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    # A changed file changes the cache key, so the folder is decoded again.
    _write_image(folder / "ant" / "0.jpg", (0, 0, 0))
    os.utime(folder / "ant" / "0.jpg", ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_arrays(f"folder:{folder}", "all")


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_arrays(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "flat").mkdir()
    _write_image(tmp_path / "flat" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match="no class sub-folders.*<class>/<image>"):
        load_arrays(f"folder:{tmp_path / 'flat'}")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_arrays(f"folder:{tmp_path / 'empty'}")
    _write_image(tmp_path / "empty" / "a" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match="without image files.*: b;"):
        load_arrays(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "junk" / "a").mkdir(parents=True)
    (tmp_path / "junk" / "a" / "x.jpg").write_text("not a JPEG")
    with pytest.raises(DataError, match="none of the 1 image files"):
        load_arrays(f"folder:{tmp_path / 'junk'}")


# ---------------------------------------------------------------- cifar10-jpeg:

CIFAR_CLASSES = sources.CIFAR10_CLASSES


def _cifar_colour(label):
    return (25 * label, 255 - 25 * label, 128)


def _write_cifar_tarball(path, per_class=6, shuffle=False):
    """A tarball laid out like cifar10-train-jpeg.tar.gz: train/<class>/<NNNN>.jpg."""
    members = [(f"train/{c}/{i:04d}.jpg", _cifar_colour(label))
               for label, c in enumerate(CIFAR_CLASSES) for i in range(per_class)]
    if shuffle:
        members = [members[i] for i in np.random.default_rng(1).permutation(len(members))]
    with tarfile.open(path, "w:gz") as tar:
        for name, colour in [("README.txt", None)] + members:
            data = b"hello" if colour is None else _encode(
                np.broadcast_to(np.asarray(colour, np.uint8), (32, 32, 3)).copy(), "jpg")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cifar10_jpeg_from_synthetic_tarball(tmp_path):
    spec = f"cifar10-jpeg:{_write_cifar_tarball(tmp_path / 'c.tar.gz')}?val_per_class=2"
    train, val, every = (load_arrays(spec, s) for s in ("train", "val", "all"))
    assert train.class_names == CIFAR_CLASSES and train.name == "cifar10-jpeg"
    assert train.images.shape == (40, 32, 32, 3) and val.images.shape == (20, 32, 32, 3)
    assert np.bincount(train.labels).tolist() == [4] * 10
    assert np.bincount(val.labels).tolist() == [2] * 10
    for image, label in zip(every.images, every.labels):
        assert np.abs(image.mean((0, 1)) - _cifar_colour(label)).max() < 4

    # The same split from a tarball with its members in another order, and from the unpacked folder.
    shuffled = _write_cifar_tarball(tmp_path / "s.tar.gz", shuffle=True)
    shuffled = f"cifar10-jpeg:{shuffled}?val_per_class=2"
    with tarfile.open(tmp_path / "c.tar.gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    for other in (shuffled, f"cifar10-jpeg:{tmp_path / 'unpacked'}?val_per_class=2"):
        np.testing.assert_array_equal(load_arrays(other, "val").images, val.images)
        np.testing.assert_array_equal(load_arrays(other, "all").labels, every.labels)


def test_cifar10_jpeg_errors(tmp_path):
    hint = r"does not exist.*\.\./shared/data/cifar10-train-jpeg\.tar\.gz"
    with pytest.raises(DataError, match=hint):
        load_arrays(f"cifar10-jpeg:{tmp_path / 'nope.tar.gz'}")
    tarball = _write_cifar_tarball(tmp_path / "c.tar.gz", per_class=3)
    with pytest.raises(DataError, match="too few to hold out 500 per class"):
        load_arrays(f"cifar10-jpeg:{tarball}")
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="cannot read .*bad.tar.gz as a tar archive"):
        load_arrays(f"cifar10-jpeg:{tmp_path / 'bad.tar.gz'}")
    _write_image(tmp_path / "other" / "train" / "cat" / "0000.jpg", (1, 2, 3))
    with pytest.raises(DataError, match="expected the CIFAR-10 layout.*folder:PATH"):
        load_arrays(f"cifar10-jpeg:{tmp_path / 'other'}")


@pytest.mark.skipif(not os.path.exists(CIFAR_TARBALL),
                    reason=f"the real CIFAR-10 tarball is not at {CIFAR_TARBALL}")
def test_cifar10_jpeg_real_tarball():
    """The real 50,000 images: decoded once (~10 s), then read from the cache."""
    spec = f"cifar10-jpeg:{CIFAR_TARBALL}"
    train = load_arrays(spec, "train")
    start = time.perf_counter()
    val = load_arrays(spec, "val")
    assert time.perf_counter() - start < 5, "the second load must come from the cache"
    assert train.images.shape == (45000, 32, 32, 3) and val.images.shape == (5000, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.class_names == CIFAR_CLASSES
    assert np.bincount(train.labels).tolist() == [4500] * 10
    assert np.bincount(val.labels).tolist() == [500] * 10
    assert 100 < train.images.mean() < 150 and train.images.std() > 50


# ---------------------------------------------------------------- tfds: and spec errors


def test_tfds_offline_fails_fast_naming_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(DataError) as error:
        load_arrays("tfds:cifar10")
    assert time.perf_counter() - start < 30
    message = str(error.value)
    for needle in ("cifar10", "offline", "folder:PATH", "cifar10-jpeg:", "shapes", "TFDS_DATA_DIR"):
        assert needle in message


@pytest.mark.parametrize("spec, pattern", [
    ("shape", r"unknown data spec 'shape'.*shapes, folder:PATH, cifar10-jpeg:PATH, "
              r"tfds:NAME.*did you mean 'shapes'"),
    ("cifar10jpeg:x.tar.gz", r"did you mean 'cifar10-jpeg'"),
    ("folder", r"give a path after 'folder:'"),
    ("shapes:foo", r"shapes takes no path"),
    ("shapes?colour=red", r"unknown option 'colour'.*accepts n, size, seed"),
    ("shapes?n=five", r"n='five'.*must be an integer"),
    ("shapes?size=4", r"size='4'.*from 16"),
])
def test_spec_errors(spec, pattern):
    with pytest.raises(DataError, match=pattern):
        load_arrays(spec)


def test_unknown_split():
    with pytest.raises(DataError, match=r"unknown split 'test'.*train, val, all"):
        load_arrays("shapes", "test")
