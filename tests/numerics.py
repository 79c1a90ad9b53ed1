"""Independent numerical references shared by the tests."""
import math

import numpy as np


def central_differences(f, z, eps=1e-6):
    """Numerical gradient of the float64 numpy function f at z (central differences)."""
    z = np.asarray(z, np.float64)
    num = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        plus, minus = z.copy(), z.copy()
        plus[idx] += eps
        minus[idx] -= eps
        num[idx] = (f(plus) - f(minus)) / (2 * eps)
    return num


def bilinear_sample(image, y, x):
    """Bilinear sample of image [H, W, C] at float (y, x) in pixel-centre coordinates, with
    zeros outside the image (a neighbour with zero weight contributes nothing)."""
    h, w = image.shape[:2]
    y0, x0 = math.floor(y), math.floor(x)
    fy, fx = y - y0, x - x0
    out = np.zeros(image.shape[2:], np.float64)
    for yy, xx, weight in [(y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx),
                           (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)]:
        if 0 <= yy < h and 0 <= xx < w:
            out += weight * image[yy, xx]
    return out
