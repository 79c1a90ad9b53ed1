"""`python -m zoo.show_views`: every registered method draws its pretext inputs into a PNG."""
import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.show_views import main, show_views


@pytest.mark.parametrize("name", zoo.list_methods())
def test_every_method_draws_its_views(name, tmp_path):
    out = show_views(name, str(tmp_path / f"{name}.png"), data="shapes?n=40", n=3, width=0.125)
    with Image.open(out) as png:
        width, height = png.size
        pixels = np.asarray(png.convert("RGB"))
    assert height > 3 * 72 and width >= 72  # three rows of at least one panel
    assert pixels.std() > 10  # images were drawn, not a blank sheet


def test_rotation_panels_show_each_angle_with_its_label():
    import tensorflow as tf
    method = zoo.create("rotation", width=0.125, num_rotations=8)
    images = zoo.data.load_arrays("shapes?n=40", "val")
    views = method.make_views(tf.constant(images.images[:2]), tf.constant(images.labels[:2]), tf.constant([0, 0]))
    panels = method.view_panels(views, 1)
    assert [caption for caption, _ in panels] == [f"{a} deg, label {i}" for i, a in enumerate(range(0, 360, 45))]
    np.testing.assert_array_equal(panels[2][1], views["images"][8 + 2].numpy())


def test_cli_reports_a_bad_override(tmp_path, capsys):
    assert main(["rotation", "--out", str(tmp_path / "x.png"), "--set", "num_rotations=3"]) == 2
    assert "num_rotations=3" in capsys.readouterr().err
