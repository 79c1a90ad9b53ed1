"""`zoo-views` (trainers/show_views.py): every registered method draws its pretext inputs into a
readable PNG: each original image enlarged beside its views, a tile per view, a title naming the
method and its pretext task. References: the input images (enlarged here with np.repeat), the
method's own make_views / view_panels, hand-set sizes."""
import numpy as np
import pytest
from PIL import Image

import zoo
from trainers.show_views import PRETEXT, TILE, enlargement, main, render, views_figure


def _tile(png, box):
    x, y, w, h = box
    return png[y:y + h, x:x + w]


@pytest.mark.parametrize("name", zoo.list_methods())
def test_every_method_draws_the_original_beside_a_tile_per_view(name, tmp_path):
    import tensorflow as tf
    sheet, boxes, originals = views_figure(name, data="shapes?n=40", n=2, width=0.125)
    sheet.save(tmp_path / "views.png")
    with Image.open(tmp_path / "views.png") as png:
        pixels = np.asarray(png.convert("RGB"))
    # the same panels as the method's own view_panels, one tile each, after the original
    method = zoo.create(name, width=0.125)
    images = zoo.data.load_arrays("shapes?n=40", "val")
    labels = np.arange(2) if method.uses_example_ids else images.labels[:2]
    views = method.make_views(tf.constant(images.images[:2]), tf.constant(labels, tf.int32), tf.constant([0, 0]))
    assert [len(row) for row in boxes] == [1 + len(method.view_panels(views, i)) for i in range(2)]
    for row, original in zip(boxes, originals):
        factor = TILE // 32  # a 32 px image is drawn at TILE px, each pixel a factor x factor block
        expected = np.repeat(np.repeat(original, factor, axis=0), factor, axis=1)
        np.testing.assert_array_equal(_tile(pixels, row[0]), expected)
        for x, y, w, h in row:  # every tile inside the sheet and at least TILE px
            assert min(w, h) >= TILE and x + w <= pixels.shape[1] and y + h <= pixels.shape[0]
    assert pixels.shape[0] >= 2 * TILE and pixels.shape[1] >= 720  # laptop-readable, not 156x412
    assert name in PRETEXT


def test_a_small_view_is_enlarged_by_a_whole_factor_and_long_captions_wrap():
    view = np.random.default_rng(0).random((7, 7, 3)).astype(np.float32)
    caption = "neighbour: bottom-right " * 4
    sheet, boxes = render("title", "subtitle", [[("original", np.zeros((32, 32, 3))), (caption, view)]])
    pixels = np.asarray(sheet)
    factor = enlargement(7)
    assert factor == 19 and boxes[0][1][2:] == (7 * factor, 7 * factor)  # ceil(128 / 7)
    expected = np.repeat(np.repeat((np.clip(view, 0, 1) * 255).round().astype(np.uint8), factor, 0), factor, 1)
    np.testing.assert_array_equal(_tile(pixels, boxes[0][1]), expected)
    # the wrapped caption is drawn below the tile and inside the sheet: dark pixels under the
    # view's cell, several text lines tall, and the bottom margin is blank
    x, y, w, h = boxes[0][1]
    below = pixels[y + h + 2:, x:x + w].min(axis=2) < 128
    rows_with_text = np.flatnonzero(below.any(axis=1))
    assert rows_with_text.size and rows_with_text.max() - rows_with_text.min() > 3 * 16
    assert not (pixels[-4:] < 128).any()


def test_rotation_panels_show_each_angle_with_its_label():
    import tensorflow as tf
    method = zoo.create("rotation", width=0.125, num_rotations=8)
    images = zoo.data.load_arrays("shapes?n=40", "val")
    views = method.make_views(tf.constant(images.images[:2]), tf.constant(images.labels[:2]), tf.constant([0, 0]))
    panels = method.view_panels(views, 1)
    assert [caption for caption, _ in panels] == [f"{a} deg, label {i}" for i, a in enumerate(range(0, 360, 45))]
    np.testing.assert_array_equal(panels[2][1], views["images"][8 + 2].numpy())


def test_cli_writes_the_png_and_reports_a_bad_override(tmp_path, capsys):
    small = ["--data", "shapes?n=40"]  # 40 generated images, not the default 6,000
    assert main(["rotation", "--out", str(tmp_path / "r.png"), "--n", "1", "--set", "width=0.125", *small]) == 0
    with Image.open(tmp_path / "r.png") as png:
        assert png.size[0] >= 720 and png.size[1] >= TILE
    assert main(["rotation", "--out", str(tmp_path / "x.png"), "--set", "num_rotations=3", *small]) == 2
    assert "num_rotations=3" in capsys.readouterr().err
