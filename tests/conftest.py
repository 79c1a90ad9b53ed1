"""Test session set-up: split the CPU into 2 logical devices before TensorFlow starts, so
that MirroredStrategy tests can run on this machine (the default strategy still uses one)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import zoo  # noqa: E402,F401  (TensorFlow's environment defaults, e.g. oneDNN, as users get them)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _zoo_cache(tmp_path_factory, monkeypatch):
    """Keep every test's cached arrays out of the user's cache directory."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "zoo-cache"))


@pytest.fixture(scope="session")
def two_device_strategy():
    """One MirroredStrategy over the 2 logical CPUs for the whole session: every strategy
    numbers its collectives from the same key, so two strategies in one process that reduce
    tensors of different shapes fail with "Shape mismatch in the collective instance"."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
