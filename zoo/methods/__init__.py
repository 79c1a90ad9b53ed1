"""One file per method; importing this package registers them all."""
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.methods import amdim, counting, cpc, dim, exemplar, jigsaw, moco, npid, pirl, relative_patch, rotation, simclr, supcon, triplet  # noqa: F401  (registration)

__all__ = ["MethodConfig", "SSLMethod"]
