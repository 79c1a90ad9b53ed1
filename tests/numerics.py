"""Independent numerical references shared by the loss tests."""
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
