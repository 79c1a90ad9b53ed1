"""One file per method; importing this package registers them all."""
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.methods import amdim, autoencoder, barlow_twins, byol, colorization, context_encoder, counting, cpc, deepcluster, deepclusterv2, dim, dino, exemplar, iic, jigsaw, mae, moco, mocov3, nnclr, npid, pirl, relative_patch, rotation, simclr, simsiam, supcon, swav, triplet, vicreg  # noqa: F401  (registration)

__all__ = ["MethodConfig", "SSLMethod"]
