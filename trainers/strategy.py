"""tf.distribute strategies by name (`zoo-train --strategy`) and the mixed-precision policy for
the devices of a strategy."""
import os

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


def make_strategy(name="default", cpu_devices=None, tpu=None):
    """A tf.distribute strategy by name. Must run before TensorFlow initialises its devices.

    - "default": one device.
    - "mirrored": all GPUs of this machine, or `cpu_devices` logical CPU devices (to test data
      parallelism on a CPU machine).
    - "multiworker": MultiWorkerMirroredStrategy over the processes listed in the TF_CONFIG
      environment variable (each worker uses its GPUs, or its CPU); `zoo-train --workers N`
      starts N such workers on this machine.
    - "tpu": TPUStrategy on the TPU at `tpu` (a name or grpc:// address for
      TPUClusterResolver; "" or None: the local TPU VM). Not tested here (no TPU).
    """
    import tensorflow as tf
    if name not in STRATEGIES:
        raise SystemExit(f"error: --strategy {name!r}: choose one of {', '.join(STRATEGIES)}.")
    if cpu_devices and name in ("multiworker", "tpu"):
        raise SystemExit(f"error: --cpu-devices is for --strategy mirrored, not {name}.")
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise SystemExit("error: --strategy multiworker reads the cluster from the TF_CONFIG environment variable, "
                             "which is not set; to try it on this machine add --workers 2.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        except RuntimeError as e:
            raise SystemExit(f"error: --cpu-devices {cpu_devices}: TensorFlow's devices are already initialised "
                             f"in this process ({e}); pass it from the command line, not after other TF work.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)


def mixed_precision_policy(strategy=None):
    """The mixed-precision dtype policy for the devices of `strategy`: mixed_float16 on GPUs
    (with loss scaling), mixed_bfloat16 on TPUs and CPUs (bfloat16 needs no loss scaling)."""
    import tensorflow as tf
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy) or not tf.config.list_logical_devices("GPU"):
        return "mixed_bfloat16"
    return "mixed_float16"


def slow_bfloat16_warning(policy, cpuinfo="/proc/cpuinfo"):
    """A warning when `policy` computes in bfloat16 on a CPU without bfloat16 instructions
    (AVX512_BF16 or AMX_BF16): TensorFlow then emulates it, measured 6.5x slower than float32
    on the AVX2 machines here (docs/DESIGN_NOTES.md 26). None when there is nothing to say
    (float32, a GPU / TPU policy, a CPU that has them, or no /proc/cpuinfo to read)."""
    if policy != "mixed_bfloat16":
        return None
    import tensorflow as tf
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return None
    try:
        with open(cpuinfo) as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return None
    if flags & {"avx512_bf16", "amx_bf16"}:
        return None
    return ("WARNING: mixed precision computes in bfloat16, which this CPU lacks (no avx512_bf16 / amx_bf16 in "
            f"{cpuinfo}): TensorFlow emulates it, measured 6.5x slower than float32. Train in float32 with "
            "--set mixed_precision=false (a run may switch when it resumes; its weights are float32 either way).")
