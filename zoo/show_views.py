"""Draw a method's pretext inputs for a few images into one PNG, so a person can check them.

    python -m zoo.show_views jigsaw --out jigsaw_views.png [--data shapes] [--n 4] [--set key=value]
    python -m zoo.show_views all --out views/      # one PNG per registered method

One row per image: the panels of the method's `view_panels` (patch pairs with their labels,
shuffled puzzles, surrogate-class copies, count tiles, rotated copies), each captioned.
"""
import argparse
import os
import sys

import numpy as np

PANEL = 72  # pixels per panel side in the PNG (small views are enlarged, nearest neighbour)
CAPTION = 24


def render(rows, path, panel=PANEL):
    """rows: list of lists of (caption, HxWx3 float image). Writes a PNG; returns its size."""
    from PIL import Image, ImageDraw
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (cols * (panel + 4) + 4, len(rows) * (panel + CAPTION + 6) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        for j, (caption, image) in enumerate(row):
            image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
            tile = Image.fromarray((image * 255).round().astype(np.uint8)).resize((panel, panel), Image.NEAREST)
            x, y = 4 + j * (panel + 4), 4 + i * (panel + CAPTION + 6)
            sheet.paste(tile, (x, y))
            for k, line in enumerate(_wrap(caption, panel // 6)[:2]):
                draw.text((x, y + panel + 1 + 11 * k), line, fill="black")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)
    return sheet.size


def _wrap(text, width):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def show_views(method_name, out, data="shapes", n=4, seed=0, **overrides):
    """Make the views of the first `n` images of `data` (val split) and draw them to `out`."""
    import tensorflow as tf
    import zoo
    images = zoo.data.load_arrays(data, "val")
    method = zoo.create(method_name, image_size=images.image_size, **overrides)
    count = max(2, n + n % 2)  # an even batch: some methods pair image i with image i XOR 1
    # Instance methods (NPID, exemplar) get each image's index, as the training pipeline gives them.
    labels = np.arange(count) if method.uses_example_ids else images.labels[:count]
    views = method.make_views(tf.constant(images.images[:count]), tf.constant(labels, tf.int32),
                              tf.constant([seed, 0], tf.int64))
    rows = [method.view_panels(views, i) for i in range(n)]
    render(rows, out)
    return out


def main(argv=None):
    import zoo
    parser = argparse.ArgumentParser(prog="python -m zoo.show_views", description=__doc__.split("\n")[0])
    parser.add_argument("method", help=f"one of {zoo.list_methods()}, or all")
    parser.add_argument("--out", required=True, help="PNG file to write (a folder for `all`)")
    parser.add_argument("--data", default="shapes", help="data spec (default: the generated shapes set)")
    parser.add_argument("--n", type=int, default=4, help="number of images (rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="method config override, e.g. --set num_rotations=8")
    args = parser.parse_args(argv)
    from trainers.recipes import set_value
    overrides = {}
    try:
        for item in args.set:
            set_value(overrides, item)
        if args.method == "all":
            for name in zoo.list_methods():
                print("wrote", show_views(name, os.path.join(args.out, f"{name}.png"), args.data, args.n, args.seed,
                                          **overrides))
        else:
            print("wrote", show_views(args.method, args.out, args.data, args.n, args.seed, **overrides))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
