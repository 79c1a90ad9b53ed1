"""Optimizers and learning-rate schedules for self-supervised pre-training.

- `LARS`: Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg 2017, "Large Batch
  Training of Convolutional Networks", arXiv:1708.03888), the optimizer of SimCLR
  (Chen et al. 2020) and BYOL (Grill et al. 2020).
- `WarmupCosine`: linear warm-up then cosine decay (Goyal et al. 2017; Loshchilov & Hutter
  2017, "SGDR"), the schedule of SimCLR/BYOL/MoCo v2.
- `make_optimizer`: build any of the optimizers used by the zoo by name.
- `scale_learning_rate`: the linear (Goyal et al. 2017) and square-root (SimCLR) batch-size
  scaling rules.
"""
import difflib
import math
import re

import keras
from keras import ops

#: Default LARS exclusions, searched (`re.search`) in each variable's `path`: the last path
#: component is `bias` (Dense/Conv biases) or `gamma`/`beta` (BatchNormalization,
#: LayerNormalization, GroupNormalization scale and offset), e.g. "dense/bias" or
#: "batch_normalization/gamma"; kernels such as "dense/kernel" are not matched.
DEFAULT_EXCLUDE = (r"(^|/)bias$", r"(^|/)gamma$", r"(^|/)beta$")


def _matches(patterns, path):
    return any(re.search(p, path) for p in patterns)


@keras.saving.register_keras_serializable(package="zoo")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg 2017, arXiv:1708.03888).

    For each variable `w` with (globally reduced) gradient `g`, learning rate `lr`, momentum
    buffer `v` (initially 0), following Algorithm 1 of the paper and SimCLR's reference
    implementation (google-research/simclr, `classic_momentum=True`)::

        g' = g + weight_decay * w                       # if w is decayed
        trust = eta * ||w|| / ||g'||   if ||w|| > 0 and ||g'|| > 0 else 1   # if w is adapted
        v  = momentum * v + lr * trust * g'
        w  = w - v                                      # or, nesterov:
        w  = w - (momentum * v + lr * trust * g')

    The learning rate sits inside the momentum buffer ("classic" momentum), so a variable
    excluded from both decay and adaptation follows exactly `keras.optimizers.SGD` with the
    same momentum/nesterov, and a changing schedule only affects new gradient contributions.

    Weight decay is coupled (added to the gradient before the trust ratio, as in the paper);
    Keras's own decoupled decay is switched off for this optimizer, so the base-class method
    `exclude_from_weight_decay()` has no effect: use the constructor patterns instead.

    Args:
        learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: momentum coefficient.
        weight_decay: L2 coefficient added to the gradient of decayed variables.
        eta: trust coefficient of the layer-wise ratio.
        nesterov: use Nesterov momentum.
        exclude_from_weight_decay: regex patterns searched in each variable's `path`
            (e.g. "dense/bias"); matching variables get no weight decay.
            None means `DEFAULT_EXCLUDE` (biases and normalization gamma/beta).
        exclude_from_layer_adaptation: patterns of variables that use trust ratio 1;
            None means the same as `exclude_from_weight_decay` (SimCLR's convention).
        **kwargs: other `keras.optimizers.Optimizer` arguments (clipnorm, name, ...).
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        eta=0.001,
        nesterov=False,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.momentum = momentum
        self.eta = eta
        self.nesterov = nesterov
        self._exclude_decay = list(
            DEFAULT_EXCLUDE if exclude_from_weight_decay is None else exclude_from_weight_decay
        )
        self._exclude_adapt = list(
            self._exclude_decay
            if exclude_from_layer_adaptation is None
            else exclude_from_layer_adaptation
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = [self.add_variable_from_reference(v, "momentum") for v in var_list]
        # Decided here, on the Keras variables: inside `update_step` under tf.distribute the
        # variables are per-replica components with names like "dense/bias/replica_1:0".
        paths = [getattr(v, "path", v.name) for v in var_list]
        self._decayed = [not _matches(self._exclude_decay, p) for p in paths]
        self._adapted = [not _matches(self._exclude_adapt, p) for p in paths]

    def _apply_weight_decay(self, variables):
        """No decoupled decay: LARS adds `weight_decay * w` to the gradient in `update_step`."""

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        grad = ops.cast(gradient, dtype)
        if self.weight_decay and self._decayed[index]:
            grad = grad + ops.cast(self.weight_decay, dtype) * variable
        if self._adapted[index]:
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(grad)))
            both_positive = ops.logical_and(w_norm > 0, g_norm > 0)
            safe_g_norm = ops.where(both_positive, g_norm, 1.0)
            lr = lr * ops.where(both_positive, self.eta * w_norm / safe_g_norm, 1.0)
        step = lr * grad
        v = self._momentums[index]
        momentum = ops.cast(self.momentum, dtype)
        self.assign(v, momentum * v + step)
        self.assign_sub(variable, momentum * v + step if self.nesterov else v)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            eta=self.eta,
            nesterov=self.nesterov,
            exclude_from_weight_decay=list(self._exclude_decay),
            exclude_from_layer_adaptation=list(self._exclude_adapt),
        )
        return config


@keras.saving.register_keras_serializable(package="zoo")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up then cosine decay (Goyal et al. 2017, arXiv:1706.02677; Loshchilov &
    Hutter 2017, arXiv:1608.03983), as in SimCLR/BYOL::

        lr(t) = start + (peak - start) * t / warmup_steps                 t < warmup_steps
        lr(t) = end + (peak - end) * (1 + cos(pi * p)) / 2,
                p = min(1, (t - warmup_steps) / (total_steps - warmup_steps))   otherwise

    so lr(warmup_steps) = peak and lr(t) = end for t >= total_steps. Keras optimizers call
    the schedule with their iteration count, which is 0 at the first update.
    """

    def __init__(self, peak, warmup_steps, total_steps, *, start=0.0, end=0.0):
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"Need 0 <= warmup_steps <= total_steps, got {warmup_steps=} {total_steps=}."
            )
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.start = float(start)
        self.end = float(end)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.start + (self.peak - self.start) * step / max(self.warmup_steps, 1)
        progress = ops.clip(
            (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0
        )
        cosine = self.end + (self.peak - self.end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "start": self.start,
            "end": self.end,
        }


class _AccumulateAcrossReplicas:
    """Keras's `gradient_accumulation_steps` (sum the gradients of k batches, apply their mean
    on every k-th call) made to work under strategies that synchronise through `merge_call`
    (MirroredStrategy on CPUs and GPUs). Keras chooses "update or accumulate" with a cond in
    replica context whose update branch calls `merge_call`, which tf.distribute rejects
    ("`merge_call` called while defining a new graph", measured with Keras 3.15 / TF 2.21);
    here the cond runs in cross-replica context, as Keras's own LossScaleOptimizer does. Under
    the default strategy and MultiWorkerMirroredStrategy (no merge_call) Keras's code runs as
    is. Each replica sums its own local gradients; the mean is all-reduced at the update."""

    def _backend_apply_gradients(self, grads, trainable_variables):
        import tensorflow as tf
        if (not self.gradient_accumulation_steps or tf.distribute.in_cross_replica_context()
                or tf.__internal__.distribute.strategy_supports_no_merge_call()):
            return super()._backend_apply_gradients(grads, trainable_variables)
        steps = self.gradient_accumulation_steps
        accumulators = [self._accumulated_gradients[self._get_variable_index(v)].value
                        for v in trainable_variables]

        def update(grads):  # replica context, on every replica: Keras's update branch
            grads = self._clip_gradients([(g + a) / steps for g, a in zip(grads, accumulators)])
            self._apply_weight_decay(trainable_variables)
            self._backend_update_step(grads, trainable_variables, self.learning_rate)

        def add_to(distribution, grads, scale):  # cross-replica: accumulator <- scale * acc + g
            for g, a in zip(grads, accumulators):
                distribution.extended.update(a, lambda v, g: v.assign(scale * v + tf.cast(g, v.dtype)),
                                             args=(g,), group=False)

        def cross_replica(distribution, grads):
            def apply_and_reset():
                distribution.extended.call_for_each_replica(update, args=(grads,))
                add_to(distribution, [tf.zeros_like(a) for a in accumulators], 0.0)

            ops.cond((self._iterations + 1) % steps == 0, apply_and_reset,
                     lambda: add_to(distribution, grads, 1.0))

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads,))


class _ConstantRateFor:
    """A learning rate that stays at `constant_learning_rate` for the variables whose `id` is in
    `constant_lr_ids`, while the others follow the optimizer's schedule (SimSiam, Chen & He 2021,
    section 4.4: the predictor's rate is not decayed). Keras 3 has no per-variable rate; every
    Keras optimizer (and LARS) passes the current rate to `update_step`, so that is where it is
    swapped. Decoupled weight decay (AdamW, Lamb) still scales with the scheduled rate."""
    constant_lr_ids = frozenset()
    constant_learning_rate = 0.0

    def build(self, var_list):
        super().build(var_list)
        # Decided here, on the Keras variables (inside update_step under tf.distribute they are
        # per-replica components), by the index Keras gives each variable.
        self._constant_rate_flags = [id(v) in self.constant_lr_ids for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        if self._constant_rate_flags[self._get_variable_index(variable)]:
            learning_rate = ops.cast(self.constant_learning_rate, ops.dtype(learning_rate))
        return super().update_step(gradient, variable, learning_rate)


_SUBCLASSES = {}


def _with_mixins(cls, mixins):
    """`cls` with `mixins` mixed in (one subclass per combination)."""
    if not mixins:
        return cls
    key = (cls, *mixins)
    if key not in _SUBCLASSES:
        _SUBCLASSES[key] = type(cls.__name__, (*mixins, cls), {"__module__": cls.__module__})
    return _SUBCLASSES[key]


def constant_lr_variables(method):
    """The trainable variables of the sub-models a method names in its `constant_lr_layers`
    (e.g. SimSiam's `("predictor",)`): pass them to `make_optimizer(constant_lr_variables=...)`."""
    return [v for name in getattr(method, "constant_lr_layers", ()) for v in getattr(method, name).trainable_variables]


OPTIMIZERS = ("adam", "adamw", "lamb", "lars", "sgd")


def make_optimizer(
    name,
    learning_rate,
    *,
    weight_decay=0.0,
    momentum=0.9,
    warmup_steps=0,
    total_steps=None,
    accumulate_steps=1,
    constant_lr_variables=(),
    **kwargs,
):
    """Build an optimizer by name; `kwargs` go to its constructor (e.g. `nesterov`, `eta`).

    - "sgd": momentum SGD with *coupled* L2 weight decay (g += weight_decay * w before the
      momentum, as in PyTorch's SGD and the MoCo/SimCLR recipes), implemented as `LARS`
      with layer adaptation off for every variable; biases and normalization gamma/beta
      are not decayed (`DEFAULT_EXCLUDE`). Keras's SGD decay would instead be decoupled.
    - "lars": `LARS` (decay inside the trust ratio).
    - "adamw", "lamb", "adam": the Keras optimizers, whose `weight_decay` is Keras's
      decoupled decay `w -= lr * weight_decay * w` on every variable (so "adam" with decay
      behaves like "adamw"); `momentum` is not used by them.

    If `total_steps` is given, `learning_rate` is the peak of a `WarmupCosine` schedule.

    `accumulate_steps` k > 1: gradient accumulation (Keras's `gradient_accumulation_steps`,
    made to work under MirroredStrategy too): the variables change on every k-th batch, by the
    mean gradient of the k batches, so k batches of B act as one batch of kB (exactly, for a
    model without batch norm; batch-norm statistics and in-batch negatives stay per batch).
    `iterations` then counts updates; the schedule is evaluated at the batch count, so give
    `warmup_steps` and `total_steps` in batches.

    `constant_lr_variables`: variables trained at the constant rate `learning_rate` (the peak),
    without warm-up or decay, e.g. SimSiam's predictor (`constant_lr_variables(method)`).
    """
    if accumulate_steps > 1:
        kwargs["gradient_accumulation_steps"] = int(accumulate_steps)
    key = name.lower()
    if key not in OPTIMIZERS:
        close = difflib.get_close_matches(key, OPTIMIZERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}.{hint}")
    peak = learning_rate
    if total_steps is not None:
        learning_rate = WarmupCosine(learning_rate, warmup_steps, total_steps)
    elif warmup_steps:
        raise ValueError("warmup_steps needs total_steps (the end of the cosine decay).")
    cls = {"sgd": LARS, "lars": LARS, "adamw": keras.optimizers.AdamW, "lamb": keras.optimizers.Lamb,
           "adam": keras.optimizers.Adam}[key]
    constant_ids = frozenset(id(v) for v in constant_lr_variables)
    mixins = []
    if accumulate_steps > 1:
        mixins.append(_AccumulateAcrossReplicas)
    if constant_ids:
        mixins.append(_ConstantRateFor)
    optimizer = _construct(_with_mixins(cls, tuple(mixins)), key, learning_rate, momentum, weight_decay, kwargs)
    if constant_ids:
        optimizer.constant_lr_ids = constant_ids
        optimizer.constant_learning_rate = float(peak)
    return optimizer


def _construct(cls, key, learning_rate, momentum, weight_decay, kwargs):
    decay = weight_decay or None  # Keras optimizers: None disables their decoupled decay.
    if key == "sgd":
        return cls(
            learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            exclude_from_layer_adaptation=[".*"],
            **kwargs,
        )
    if key == "lars":
        return cls(learning_rate, momentum=momentum, weight_decay=weight_decay, **kwargs)
    if key == "adamw":
        return cls(learning_rate, weight_decay=weight_decay, **kwargs)
    return cls(learning_rate, weight_decay=decay, **kwargs)


def batches_seen(optimizer):
    """The number of batches `optimizer` has been applied to (a variable): its `iterations`,
    except with gradient accumulation, where `iterations` counts updates (every k-th batch)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    return getattr(inner, "_iterations", inner.iterations)


def scale_learning_rate(base_lr, batch_size, rule="linear", base_batch=256):
    """Learning rate for `batch_size`.

    - "linear": `base_lr * batch_size / base_batch` (Goyal et al. 2017, arXiv:1706.02677;
      SimCLR's LARS rule 0.3 * B / 256).
    - "sqrt": `base_lr * sqrt(batch_size)` (SimCLR, Chen et al. 2020, Appendix B.1: LARS with
      0.075 * sqrt(B) works better for small batches); `base_batch` is not used.
    """
    if rule == "linear":
        return base_lr * batch_size / base_batch
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(f"Unknown scaling rule {rule!r}; use 'linear' or 'sqrt'.")
