"""`zoo-views METHOD --out METHOD.png`: draw a method's pretext inputs for a few images, so a
person can check them.

    zoo-views jigsaw --out jigsaw.png [--data shapes] [--n 3] [--set num_permutations=100]
    zoo-views all --out views/          # one PNG per registered method

One row per image: the original image, then the panels of the method's `view_panels` (the
augmented views, patch pairs with their position label, shuffled and solved puzzles, rotated
copies with their angle, ...), each captioned with the method's caption and, when it differs
from the original's, the view's own size in pixels. Every tile is enlarged by a whole factor
(nearest neighbour, so pixels stay sharp) to at least TILE pixels; a title names the method
and its pretext task.
"""
import argparse
import math
import os
import sys

import numpy as np

TILE = 128       # smallest side of a drawn tile, in screen pixels (a 32 px image is drawn 4x)
MIN_WIDTH = 720  # the sheet is at least this wide, so that the title fits on a line or two
MAX_VIEWS = 8    # views per line; more continue on the next line
PAD = 10         # space around and between tiles
FONT_SIZE = 16
TITLE_SIZE = 20

# What each method learns from, one line for the figure's title (README, "Methods").
PRETEXT = {
    "rotation": "classify which rotation was applied",
    "relative_patch": "predict the position (1 of 8) of a neighbour patch relative to the centre patch",
    "jigsaw": "recognise which permutation shuffled the 9 tiles",
    "exemplar": "one surrogate class per seed image, many transformed copies of it",
    "counting": "the counts of the downsampled image equal the sum of the counts of its 4 tiles",
    "npid": "instance discrimination: each image is its own class, against a memory bank",
    "simclr": "two augmented views of an image attract, views of other images repel (NT-Xent)",
    "moco": "query view matches its momentum-encoded key among a queue of other keys",
    "pirl": "the jigsaw-shuffled tiles and the image view embed close (memory bank)",
    "supcon": "contrastive, with every view of the same class as a positive (uses labels)",
    "triplet": "margin loss: same-class views closer than other-class views (uses labels)",
    "cpc": "predict the embeddings of patches rows ahead from the context above",
    "dim": "local features against the global vector of the same image (Deep InfoMax)",
    "amdim": "Deep InfoMax across two views: global-to-local and local-to-local",
    "byol": "predict the momentum target's projection of the other view",
    "simsiam": "predict the other view's projection through a stop-gradient",
    "mocov3": "predicted queries against momentum keys of the other view, global batch",
    "barlow_twins": "cross-correlation of the two views' embeddings towards the identity",
    "vicreg": "invariance, variance and covariance terms on the two views' embeddings",
    "nnclr": "the other view's nearest neighbour in a support queue is the positive",
    "swav": "predict one crop's cluster assignment (Sinkhorn codes) from every other crop; multi-crop",
    "dino": "the student matches the momentum teacher's outputs on the large crops from every crop; multi-crop",
    "deepcluster": "classify each image's k-means cluster of the whitened features (re-clustered every epoch, head re-initialised)",
    "deepclusterv2": "predict each crop's k-means cluster (re-clustered every epoch) against frozen centroid prototypes",
    "mae": "reconstruct the per-patch-normalised pixels of the 75 % of patches removed, from the visible 25 %",
    "iic": "maximise the mutual information of the cluster assignments of an image and its transformed copies",
    "context_encoder": "inpaint a removed region (random shapes, blocks or the centre) from the rest of the image",
    "colorization": "predict the ab colours (a distribution over quantised ab bins) from the lightness L alone",
    "autoencoder": "reproduce the image from the encoder's last feature map",
    "denoising_autoencoder": "reproduce the clean image from a corrupted copy (masking or gaussian noise)",
}


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def enlargement(side, tile=TILE):
    """The whole factor that brings a view of `side` pixels to at least `tile` pixels."""
    return max(1, math.ceil(tile / side))


def _as_uint8(image):
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    return (image * 255).round().astype(np.uint8)


def _wrap(draw, text, font, width):
    """Lines of `text` no wider than `width` pixels (a word longer than that is split)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            while len(word) > 1 and draw.textlength(word, font=font) > width:  # split an over-long word
                cut = 1
                while draw.textlength(word[:cut + 1], font=font) <= width:
                    cut += 1
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        if line:
            lines.append(line)
    return lines or [""]


def render(title, subtitle, rows, tile=TILE):
    """A sheet with `title` and `subtitle` (wrapped) above the panels. rows: one list per
    example of (caption, HxWx3 float image in [0, 1]); the first entry of a row is drawn in
    the first column, the rest after it, MAX_VIEWS per line.

    Returns (PIL image, boxes): boxes[i][j] = (x, y, width, height) of panel j of row i on the
    sheet. Each panel is enlarged by the whole factor `enlargement(side)` with nearest
    neighbour and centred in its cell; captions are wrapped to the cell width, never cut."""
    from PIL import Image, ImageDraw
    font, title_font = _font(FONT_SIZE), _font(TITLE_SIZE)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = [[np.asarray(image).shape[:2] for _, image in row] for row in rows]
    cell = max(max(h, w) * enlargement(max(h, w), tile) for row in sizes for h, w in row)
    cell = max(cell, tile)
    columns = 1 + min(MAX_VIEWS, max(len(row) - 1 for row in rows))
    sheet_width = max(MIN_WIDTH, PAD + columns * (cell + PAD))
    line_height = FONT_SIZE + 4

    title_lines = _wrap(scratch, title, title_font, sheet_width - 2 * PAD)
    subtitle_lines = _wrap(scratch, subtitle, font, sheet_width - 2 * PAD)
    subtitle_y = PAD + len(title_lines) * (TITLE_SIZE + 6)
    y = subtitle_y + len(subtitle_lines) * line_height + PAD
    # lay out first (positions and wrapped captions), then draw on a sheet of the right height
    placed, boxes, separators = [], [], []
    for row in rows:
        row_boxes = []
        separators.append(y - PAD // 2)
        views = row[1:]
        chunks = [views[k:k + MAX_VIEWS] for k in range(0, len(views), MAX_VIEWS)] or [[]]
        for line_index, chunk in enumerate(chunks):
            entries = ([(0, *row[0])] if line_index == 0 else []) + [(1 + j, *panel) for j, panel in enumerate(chunk)]
            caption_lines = 1
            for column, caption, image in entries:
                wrapped = _wrap(scratch, caption, font, cell)
                caption_lines = max(caption_lines, len(wrapped))
                h, w = np.asarray(image).shape[:2]
                factor = enlargement(max(h, w), tile)
                x0 = PAD + column * (cell + PAD) + (cell - w * factor) // 2
                y0 = y + (cell - h * factor) // 2
                placed.append((image, factor, x0, y0, wrapped, PAD + column * (cell + PAD), y + cell + 4))
                row_boxes.append((x0, y0, w * factor, h * factor))
            y += cell + 4 + caption_lines * line_height + PAD
        boxes.append(row_boxes)
    sheet = Image.new("RGB", (sheet_width, y), "white")
    draw = ImageDraw.Draw(sheet)
    for k, line in enumerate(title_lines):
        draw.text((PAD, PAD + k * (TITLE_SIZE + 6)), line, fill="black", font=title_font)
    for k, line in enumerate(subtitle_lines):
        draw.text((PAD, subtitle_y + k * line_height), line, fill=(90, 90, 90), font=font)
    for line_y in separators[1:]:  # a rule between examples (a long row continues on further lines)
        draw.line([(PAD, line_y), (sheet_width - PAD, line_y)], fill=(200, 200, 200))
    for image, factor, x0, y0, wrapped, text_x, text_y in placed:
        pixels = _as_uint8(image)
        tile_image = Image.fromarray(pixels).resize((pixels.shape[1] * factor, pixels.shape[0] * factor),
                                                    Image.NEAREST)
        sheet.paste(tile_image, (x0, y0))
        draw.rectangle([x0 - 1, y0 - 1, x0 + tile_image.width, y0 + tile_image.height], outline=(160, 160, 160))
        for k, line in enumerate(wrapped):
            draw.text((text_x, text_y + k * line_height), line, fill="black", font=font)
    return sheet, boxes


def views_figure(method_name, data="shapes", n=3, seed=0, **overrides):
    """(PIL image, boxes, originals): the views figure of the first `n` val images of `data`;
    `originals` are those uint8 images, drawn (enlarged) as the first panel of each row."""
    import tensorflow as tf
    import zoo
    from trainers.recipes import resolve_data
    data = resolve_data(data)  # a plain folder path, as zoo-train takes it; a missing one is "not found"
    images = zoo.data.load_arrays(data, "val")
    if not 1 <= n <= len(images):
        raise ValueError(f"--n {n}: must be between 1 and the {len(images)} val images of {data}.")
    method = zoo.create(method_name, image_size=images.image_size, **overrides)
    count = min(len(images), max(2, n + n % 2))  # even: some methods pair image i with image i XOR 1
    # Instance methods (NPID, exemplar) get each image's index, as the training pipeline gives them.
    labels = np.arange(count) if method.uses_example_ids else images.labels[:count]
    views = method.make_views(tf.constant(images.images[:count]), tf.constant(labels, tf.int32),
                              tf.constant([seed, 0], tf.int64))
    size = images.images.shape[1:3]
    rows = []
    for i in range(n):
        label = images.labels[i]
        name = images.class_names[label] if 0 <= label < len(images.class_names) else str(label)
        row = [(f"original {i}: {name}", images.images[i] / 255.0)]
        for caption, view in method.view_panels(views, i):
            h, w = np.asarray(view).shape[:2]
            caption = caption.strip() or "view"
            row.append((caption if (h, w) == tuple(size) else f"{caption}\n{h}x{w} px", view))
        rows.append(row)
    title = f"{type(method).__name__} ({method_name}): {PRETEXT.get(method_name, 'its pretext views')}"
    subtitle = (f"Each row: an original {size[0]}x{size[1]} px image of `{data}` (val split), then the views the "
                f"method trains on (make_views, seed {seed}), enlarged by whole factors, nearest neighbour.")
    sheet, boxes = render(title, subtitle, rows)
    return sheet, boxes, images.images[:n]


def show_views(method_name, out, data="shapes", n=3, seed=0, **overrides):
    """Write the views figure of `method_name` (see views_figure) to the PNG `out`; returns `out`."""
    sheet, _, _ = views_figure(method_name, data, n, seed, **overrides)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    sheet.save(out)
    return out


def main(argv=None):
    import zoo
    parser = argparse.ArgumentParser(prog="zoo-views", description=__doc__.split("\n\n")[0])
    parser.add_argument("method", help=f"one of {', '.join(zoo.list_methods())}, or all")
    parser.add_argument("--out", required=True, help="PNG file to write (a folder for `all`)")
    parser.add_argument("--data", default="shapes",
                        help="data spec or image folder path (default: the generated shapes set)")
    parser.add_argument("--n", type=int, default=3, help="number of images (rows)")
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
