"""The `shapes` data set: small labelled images generated on the fly, no files, no network.

Ten classes of simple objects, each with a canonical UPRIGHT orientation and none a rotation
of another, so that predicting an image's rotation is a meaningful pretext task. Every image
has a random object colour, scale, aspect, small tilt (|angle| <= 12 degrees) and position
(the object always lies fully inside the image), on a random textured background (a smooth
colour gradient, low-contrast stripes and pixel noise). Colour, size and background are drawn
independently of the class, so only the silhouette tells classes apart.

Objects are described in a canonical frame (x right, y down, about [-1, 1]^2) as unions of
convex polygons, (half-)ellipses and ring segments, and rasterised with numpy on a 2x2
super-sampled pixel grid, one class at a time. Everything is drawn from
`np.random.default_rng(seed)`, so the same (n, size, seed) gives identical arrays.
"""
import numpy as np

CLASS_NAMES = [
    "triangle", "arrow", "house", "letter_t", "letter_l",
    "letter_f", "tree", "umbrella", "cup", "person",
]
_SUPERSAMPLE = 2
_MAX_TILT = np.deg2rad(12.0)


def _poly(*points):
    """A convex polygon, its vertices put in a fixed winding order."""
    p = np.asarray(points, np.float32)
    area = np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])
    return ("poly", p if area > 0 else p[::-1])


def _rect(x0, y0, x1, y1):
    return _poly((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _bar(x0, y0, x1, y1, width):
    """A straight limb of the given width from (x0, y0) to (x1, y1)."""
    d = np.array([x1 - x0, y1 - y0], np.float32)
    n = np.array([-d[1], d[0]]) / np.linalg.norm(d) * width / 2
    return _poly((x0 + n[0], y0 + n[1]), (x1 + n[0], y1 + n[1]),
                 (x1 - n[0], y1 - n[1]), (x0 - n[0], y0 - n[1]))


def _ellipse(cx, cy, rx, ry, upper_half=False):
    return ("ellipse", (cx, cy, rx, ry, upper_half))


def _ring(cx, cy, r_out, r_in, x_min=-np.inf, y_min=-np.inf):
    """An annulus, cut to the part with x >= x_min and y >= y_min."""
    return ("ring", (cx, cy, r_out, r_in, x_min, y_min))


_CLASSES = [
    [_poly((0, -1), (0.85, 0.9), (-0.85, 0.9))],                                  # triangle
    [_poly((0, -1), (0.8, -0.15), (-0.8, -0.15)), _rect(-0.25, -0.2, 0.25, 1)],   # arrow
    [_poly((0, -1), (0.95, -0.1), (-0.95, -0.1)), _rect(-0.7, -0.15, 0.7, 1)],    # house
    [_rect(-0.9, -1, 0.9, -0.55), _rect(-0.22, -0.6, 0.22, 1)],                   # letter T
    [_rect(-0.6, -1, -0.15, 1), _rect(-0.6, 0.55, 0.6, 1)],                       # letter L
    [_rect(-0.6, -1, -0.15, 1), _rect(-0.2, -1, 0.65, -0.6),                      # letter F
     _rect(-0.2, -0.2, 0.4, 0.18)],
    [_ellipse(0, -0.35, 0.75, 0.65), _rect(-0.17, 0.2, 0.17, 1)],                 # tree
    [_ellipse(0, -0.15, 1.0, 0.85, upper_half=True), _rect(-0.1, -0.2, 0.1, 0.8), # umbrella
     _ring(-0.22, 0.72, 0.32, 0.12, y_min=0.72)],
    [_poly((-0.75, -0.75), (0.45, -0.75), (0.3, 0.75), (-0.6, 0.75)),             # cup
     _ring(0.42, -0.05, 0.5, 0.27, x_min=0.4), _rect(-0.95, 0.75, 0.65, 1)],
    [_ellipse(0, -0.74, 0.26, 0.26), _bar(0, -0.55, 0, 0.3, 0.22),                # person
     _bar(0, -0.35, -0.65, 0.05, 0.2), _bar(0, -0.35, 0.65, 0.05, 0.2),
     _bar(0, 0.2, -0.45, 1, 0.22), _bar(0, 0.2, 0.45, 1, 0.22)],
]
assert len(_CLASSES) == len(CLASS_NAMES)


def _bbox(parts):
    """(x0, y0, x1, y1): a box around every part, in the canonical frame."""
    boxes = []
    for kind, p in parts:
        if kind == "poly":
            boxes.append((*p.min(0), *p.max(0)))
        else:
            cx, cy, rx = p[:3]
            ry = p[3] if kind == "ellipse" else rx
            boxes.append((cx - rx, cy - ry, cx + rx, cy + ry))
    b = np.array(boxes, np.float32)
    return np.array([*b[:, :2].min(0), *b[:, 2:].max(0)], np.float32)


def _inside(parts, x, y):
    """Boolean mask of the points (x, y) (canonical frame, any shape) inside the object."""
    mask = np.zeros(x.shape, bool)
    for kind, p in parts:
        if kind == "poly":
            part = np.ones(x.shape, bool)
            for (ax, ay), (bx, by) in zip(p, np.roll(p, -1, axis=0)):
                part &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0
        elif kind == "ellipse":
            cx, cy, rx, ry, upper_half = p
            part = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
            if upper_half:
                part &= y <= cy
        else:
            cx, cy, r_out, r_in, x_min, y_min = p
            r2 = (x - cx) ** 2 + (y - cy) ** 2
            part = (r2 <= r_out**2) & (r2 >= r_in**2) & (x >= x_min) & (y >= y_min)
        mask |= part
    return mask


def _coverage(label, size, cx, cy, sx, sy, angle):
    """Fraction of each pixel covered by object `label` ([B, size, size] float32).

    Object b is scaled by (sx[b], sy[b]) pixels per canonical unit, tilted by angle[b]
    radians and centred (its canonical origin) at pixel coordinates (cx[b], cy[b]).
    """
    s = _SUPERSAMPLE
    grid = (np.arange(size * s, dtype=np.float32) + 0.5) / s
    col = lambda v: np.asarray(v, np.float32)[:, None, None]  # noqa: E731
    dx, dy = grid[None, None, :] - col(cx), grid[None, :, None] - col(cy)
    cos, sin = col(np.cos(angle)), col(np.sin(angle))
    x = (cos * dx + sin * dy) / col(sx)
    y = (cos * dy - sin * dx) / col(sy)
    inside = _inside(_CLASSES[label], x, y).astype(np.float32)
    return inside.reshape(-1, size, s, size, s).mean(axis=(2, 4))


def template(label, size=32):
    """The upright object `label`, centred and as large as fits, as pixel coverage [size, size]."""
    x0, y0, x1, y1 = _bbox(_CLASSES[label])
    scale = 0.9 * size / max(x1 - x0, y1 - y0)
    centre = size / 2 - scale * np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return _coverage(label, size, [centre[0]], [centre[1]], [scale], [scale], [0.0])[0]


def _backgrounds(rng, n, size):
    """Smooth two-colour gradients in a random direction, plus faint stripes and noise."""
    c0 = rng.uniform(0, 255, (n, 1, 1, 3)).astype(np.float32)
    c1 = np.clip(c0 + rng.uniform(-70, 70, (n, 1, 1, 3)), 0, 255).astype(np.float32)
    coords = np.arange(size, dtype=np.float32) / size - 0.5
    yy, xx = coords[None, :, None, None], coords[None, None, :, None]

    def along(angle):  # coordinate along a random direction, [n, size, size, 1]
        a = angle[:, None, None, None].astype(np.float32)
        return np.cos(a) * xx + np.sin(a) * yy

    t = np.clip(along(rng.uniform(0, 2 * np.pi, n)) + 0.5, 0, 1)
    freq, phase, amplitude = (rng.uniform(lo, hi, (n, 1, 1, 1)).astype(np.float32)
                              for lo, hi in [(2, 8), (0, 2 * np.pi), (0, 18)])
    stripes = amplitude * np.sin(2 * np.pi * freq * along(rng.uniform(0, np.pi, n)) + phase)
    return c0 + (c1 - c0) * t + stripes, (c0 + c1)[:, 0, 0] / 2


def _object_colours(rng, background_mean):
    """Uniformly random colours, redrawn while too close to the mean background colour."""
    colours = rng.uniform(0, 255, background_mean.shape)
    for _ in range(10):
        close = np.linalg.norm(colours - background_mean, axis=1) < 90
        colours[close] = rng.uniform(0, 255, (close.sum(), 3))
    return np.where(close[:, None], 255 - background_mean, colours)


def generate(n=6000, size=32, seed=0, return_masks=False):
    """Render `n` images of `size` x `size` pixels, classes balanced (n // 10 or one more each).

    Returns (images uint8 [n, size, size, 3], labels int32 [n]) and, with return_masks,
    also the objects' masks (bool [n, size, size], pixels at least half covered).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int32)
    images, background_mean = _backgrounds(rng, n, size)
    colours = _object_colours(rng, background_mean)
    aspect = np.exp(rng.uniform(-0.15, 0.15, n))
    angle = rng.uniform(-_MAX_TILT, _MAX_TILT, n)
    scale = rng.uniform(0.25, 0.5, n) * size  # pixels per canonical unit, before fitting
    u = rng.uniform(0, 1, (n, 2))
    noise = rng.standard_normal((n, size, size, 3), np.float32)
    noise *= rng.uniform(2, 9, (n, 1, 1, 1)).astype(np.float32)
    alpha = np.zeros((n, size, size), np.float32)

    margin = 1.0
    for label in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == label)
        x0, y0, x1, y1 = _bbox(_CLASSES[label])
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
        sx, sy = scale[idx] * aspect[idx], scale[idx] / aspect[idx]
        cos, sin = np.cos(angle[idx])[:, None], np.sin(angle[idx])[:, None]
        px = (cos * sx[:, None] * corners[:, 0] - sin * sy[:, None] * corners[:, 1])
        py = (sin * sx[:, None] * corners[:, 0] + cos * sy[:, None] * corners[:, 1])
        # Shrink objects whose tilted box is wider than the image, then place the box inside.
        extent = np.maximum(px.max(1) - px.min(1), py.max(1) - py.min(1))
        shrink = np.minimum(1.0, (size - 2 * margin) / extent)
        sx, sy, px, py = sx * shrink, sy * shrink, px * shrink[:, None], py * shrink[:, None]
        cx = margin - px.min(1) + u[idx, 0] * (size - 2 * margin - (px.max(1) - px.min(1)))
        cy = margin - py.min(1) + u[idx, 1] * (size - 2 * margin - (py.max(1) - py.min(1)))
        alpha[idx] = _coverage(label, size, cx, cy, sx, sy, angle[idx])

    a = alpha[..., None]
    images += (colours[:, None, None, :].astype(np.float32) - images) * a + noise
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return (images, labels, alpha >= 0.5) if return_masks else (images, labels)
