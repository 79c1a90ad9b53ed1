"""A model zoo of self-supervised visual representation learning for Keras 3 / TensorFlow.

    import zoo
    zoo.list_methods()                      # trainable methods
    model = zoo.create("simclr", width=0.25)
    zoo.list_models()                       # pretrained encoders (details=True: zoo.describe of each)
    encoder = zoo.load("simclr_resnet18w025_cifar10")   # weights=None: the untrained baseline
    model = zoo.classifier("simclr_resnet18w025_cifar10", num_classes=10)   # encoder + Dense head
    features, paths, labels, class_names = zoo.embed("simclr_resnet18w025_cifar10", "path/to/images")

Submodules: zoo.losses, zoo.data, zoo.eval, zoo.backbones, zoo.augment, zoo.optimizers,
zoo.finetune (freeze stages, lower learning rate on the encoder).
Attributes are imported lazily so that `import zoo` stays cheap.
"""
import importlib as _importlib
import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
# oneDNN kernels: TensorFlow turns them on by itself only on the CPUs it was tuned for; on the
# AVX2-only CPUs here it leaves them off although they measured 1.6-1.75x faster there
# (benchmarks/RESULTS.md). Read when TensorFlow is imported, so it must be set before that:
# `import zoo` first, or set TF_ENABLE_ONEDNN_OPTS=0 to keep TensorFlow's own choice.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

_API = {
    "create": "zoo.registry",
    "list_methods": "zoo.registry",
    "list_models": "zoo.hub",
    "load": "zoo.hub",
    "describe": "zoo.hub",
    "classifier": "zoo.hub",
    "embed": "zoo.eval.features",
}
_SUBMODULES = {"losses", "data", "eval", "backbones", "augment", "heads", "methods", "optimizers", "finetune",
               "import_weights", "color"}

__all__ = sorted(_API) + sorted(_SUBMODULES)


def __getattr__(name):
    if name in _API:
        return getattr(_importlib.import_module(_API[name]), name)
    if name in _SUBMODULES:
        return _importlib.import_module(f"zoo.{name}")
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
