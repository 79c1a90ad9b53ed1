"""NPID: Unsupervised Feature Learning via Non-Parametric Instance Discrimination
(Wu, Xiong, Yu, Lin, CVPR 2018). Also the *non-parametric* form of Exemplar CNN: the class
weight vector of each training image is replaced by a stored feature of that image.

encoder -> linear projection to 128-d -> L2 normalise = v_i. A memory bank holds one
normalised feature per training image (zoo.memory_bank.MemoryBank). The loss is the softmax
over the bank of every image's similarity to its own entry (`zoo.losses.npid_logits`):
    -log exp(v_i . m_i / t) / sum_j exp(v_i . m_j / t),   t = 0.07,
computed against the bank as it was BEFORE this step; then the entries of the batch's images
move towards their new features, m_i <- normalize(0.5 m_i + 0.5 v_i).

Softmax: the full softmax over all N entries (`num_negatives = 0`, exact and cheap for a
CIFAR-sized bank: 45k x 128 floats). For big banks, `num_negatives = K` uses the image's own
entry plus K entries drawn uniformly at random per image (the paper draws 4096 noise samples
for NCE; here they enter a plain softmax over K + 1 logits, no NCE normalisation constant;
a drawn entry that happens to be the image's own is masked out).

Example ids: `uses_example_ids = True`, so the pipeline passes each image's index in the
training array as `labels`, and the trainer writes the training-set size into `num_examples`
(the bank size). With `num_examples = 0` (e.g. `zoo.create("npid")` in tests) the bank has
`zoo.memory_bank.DEFAULT_BANK_SIZE` rows. Ids are taken modulo the bank size (a graph cannot raise on a value),
so ids >= num_examples share rows instead of failing: size the bank to the data.

Why the bank update is in `after_update`: it is a state change that must follow the loss
(it uses the step's features, after the loss has read the old bank), so it cannot live in
`pretext_loss`, which must stay a pure function of (weights, views): the harness and the
evaluation call it without training effects. The base class's `train_step` calls
`after_update` once, after the optimizer update and outside the tape.
Under MirroredStrategy that call gathers ids and features of all replicas and writes the
same rows on every replica (see zoo/memory_bank.py). The bank is a non-trainable weight of
the method, so checkpoints save it and the exported encoder does not contain it.
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses
from zoo.heads import linear_head
from zoo.memory_bank import MemoryBank, bank_rows
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class NPIDConfig(MethodConfig):
    num_examples: int = 0           # training-set size = bank rows; filled in by the trainer
    embedding_dim: int = 128
    temperature: float = 0.07
    bank_momentum: float = 0.5
    num_negatives: int = 0          # 0: full softmax over the bank; K > 0: K random entries + the positive
    crop_scale: tuple = (0.2, 1.0)  # the paper's code: RandomResizedCrop(scale=(0.2, 1))
    jitter: float = 0.4             # ColorJitter(0.4, 0.4, 0.4, 0.4) of the paper's code
    grayscale_p: float = 0.2
    bank_seed: int = 0              # the bank's random unit-vector initialisation


@register_method("npid")
class NPID(SSLMethod):
    Config = NPIDConfig
    metric_names = ("instance_accuracy",)
    uses_example_ids = True

    @property
    def bank_size(self):
        return bank_rows(self.config.num_examples)

    def build_heads(self):
        c = self.config
        self.projector = linear_head(self.feature_dim, c.embedding_dim, name="npid_projection")
        self.memory_bank = MemoryBank(self.bank_size, c.embedding_dim, momentum=c.bank_momentum,
                                      seed=c.bank_seed, name="npid_memory_bank")

    def make_views(self, images, labels, seed):
        c = self.config
        x = augment.to_float(images)
        s_crop, s_flip, s_jit, s_gray, s_neg = augment.split_seed(seed, 5)
        b = tf.shape(x)[0]
        x = augment.random_flip(augment.random_resized_crop(x, c.image_size, s_crop, scale=tuple(c.crop_scale)), s_flip)
        j = c.jitter
        x = augment.color_jitter(x, s_jit, j, j, j, j)
        gray = tf.random.stateless_uniform([b], s_gray) < c.grayscale_p
        x = tf.where(gray[:, None, None, None], augment.grayscale(x), x)
        views = {"images": x, "ids": tf.cast(labels, tf.int32)}
        if c.num_negatives > 0:
            views["negatives"] = self.memory_bank.sample_ids(b, c.num_negatives, s_neg)
        return views

    def embed(self, images, training=False):
        """L2-normalised 128-d embeddings v of float images."""
        z = self.projector(self.encoder(images, training=training), training=training)
        return tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)

    def step_forward(self, views, training=False):
        v = self.embed(views["images"], training=training)
        ids = self.memory_bank.wrap_ids(views["ids"])
        logits, labels = losses.npid_logits(v, ids, self.memory_bank.read(), self.config.temperature,
                                            views.get("negatives"))
        loss = losses.cross_entropy(labels, logits)
        return loss, {"instance_accuracy": losses.accuracy(labels, logits)}, v

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def after_update(self, views, v, updated):
        self.memory_bank.update(views["ids"], v)  # after the loss read the old bank
