"""A recipe's typed sections: the dataclasses every layer reads, one docstring per field.

Parsing, overrides and the checks across fields live in hvdkit.recipe (`load_recipe`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal


@dataclass
class ModelConfig:
    name: str = ""
    """Built-in model: `mlp`, `cnn`, `resnet` or `gpt` (hvdkit/models/catalogue.py);
    empty with `builder`."""
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    """Widths of the fully connected hidden layers (mlp, cnn)."""
    channels: list[int] = field(default_factory=lambda: [16, 32])
    """Output channels of each 3x3 convolution (cnn only)."""
    depth: int = 18
    """ResNet depth: 18, 34 (basic blocks), 50, 101, 152 (bottleneck blocks)."""
    stem: Literal["imagenet", "small"] = "imagenet"
    """ResNet stem: `imagenet` (7x7 stride-2 convolution and 3x3 max-pooling, for 224x224
    images) or `small` (one 3x3 stride-1 convolution, no pooling, for 32x32 images)."""
    width: int = 64
    """resnet: channels of the first stage (64 in the paper; each stage doubles them);
    gpt: the embedding width (divisible by heads)."""
    layers: int = 4
    """gpt: transformer blocks."""
    heads: int = 4
    """gpt: attention heads per block."""
    block_size: int = 128
    """gpt: the longest context in tokens (the size of the position table)."""
    dropout: float = 0.0
    """gpt: dropout after the embeddings, on the attention weights and after each residual
    branch (0: none, which keeps runs comparable across ranks and frameworks)."""
    builder: str = ""
    """Your own model instead of `name`: "package.module:function", imported from the
    recipe's folder or PYTHONPATH and called as `function(input_shape, num_classes, **args)`;
    it returns an `nn.Module` or a `keras.Model` for the run's framework, or a dict
    {"torch": ..., "tensorflow": ...} of models or of factories (input_shape, num_classes)
    -> model, so that one module serves both frameworks and imports only the run's."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `builder`."""
    channels_first: bool = False
    """PyTorch: hand image batches to the model as (N, C, H, W), as PyTorch's convolutions
    expect, not as stored, (N, H, W, C), and build it for (C, H, W). Keras models always get
    (N, H, W, C), Keras's convention, so one recipe serves both. The built-in models work
    either way."""
    sync_batchnorm: bool = False
    """Normalise by the statistics of the whole global batch while training (allreduced in
    every BatchNorm layer's forward), not each replica's share: as one process on the global
    batch. PyTorch: every BatchNorm1d/2d/3d of the model; Keras: hvdkit's ResNet, or a model
    of yours built with hvdkit.adapters.tensorflow.batchnorm.SyncBatchNormalization. Without
    it, the replicas' running statistics are averaged before each evaluation and checkpoint."""
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    """PyTorch: the memory layout of image activations, in which convolutions run (parameters
    stay contiguous, as Horovod's collectives require). `auto`: channels-last on a GPU (tensor
    cores read NHWC without transposes), contiguous NCHW on a CPU, where oneDNN gets some
    channels-last convolutions wrong (uxlfoundation/oneDNN#6035: hvdkit names them when asked
    for channels-last); TensorFlow keeps its own NHWC either way."""
    output: Literal["auto", "logits", "probabilities"] = "auto"
    """What a classifier's outputs are: `logits`, or `probabilities` (it ends in a softmax;
    hvdkit then takes their log as logits, so the loss stays cross-entropy). `auto` looks at
    the first batch's outputs: rows of non-negative numbers summing to 1 are probabilities."""


@dataclass
class DataConfig:
    name: str = ""
    """Registered data set: `digits` (scikit-learn's 8x8 digits), `synthetic`, or one read
    from disk: `npy` (a folder of .npy arrays), `text` (a UTF-8 file, byte tokens), `tokens`
    (a flat file of uint16 token ids), `images` (a folder of JPEG/PNG files, one subfolder a
    class), `webdataset` (tar shards of KEY.jpg + KEY.cls); empty with `builder`."""
    path: str | list[str] = ""
    """npy: the folder holding x_train.npy, y_train.npy and optionally x_test.npy, y_test.npy;
    text, tokens: the file. Read a batch at a time, never whole. images: the folder holding
    train/<class>/*.jpg|jpeg|png (and val/<class>/...), or the class folders themselves.
    webdataset: the training shards: a brace pattern ("shards/train-{000000..000127}.tar"), a
    glob, a folder of .tar files, or a list of any of these (webdataset only)."""
    test_fraction: float = 0.2
    """Share of the samples held out as the test set (npy without test files: a fixed random
    share; text, tokens: the file's tail)."""
    samples: int = 4096
    """Number of samples (synthetic only)."""
    shape: list[int] = field(default_factory=lambda: [8, 8, 1])
    """Shape of one sample, channels last (synthetic only)."""
    classes: int = 0
    """Number of classes; labels must lie in [0, classes). 0: synthetic makes 10; npy and
    arrays of your own take the largest training label + 1; a map-style data set of your own
    needs it (or a `num_classes` attribute)."""
    block_size: int = 0
    """Tokens per input window (text, tokens); the targets are the next block_size tokens."""
    vocab_size: int = 0
    """Token ids lie in [0, vocab_size) (tokens; text is bytes, 256)."""
    workers: int = 0
    """Processes decoding batches ahead: a map-style data set's samples, or images (0: the
    prefetch thread decodes them)."""
    prefetch: int = 2
    """Batches prepared ahead in a background thread: gathered, converted and, on a GPU,
    copied to the device (0: prepared in the step's thread)."""
    drop_last: bool = True
    """Drop the last global batch of an epoch when it is incomplete (training only)."""
    image_size: int = 224
    """images, webdataset: the side in pixels of the square images the model gets (at least
    32)."""
    augment: Literal["imagenet", "none"] = "imagenet"
    """images, webdataset: `imagenet` trains on random resized crops (8-100% of the area,
    aspect 3/4-4/3) flipped at random, and tests on a center crop of the image resized to
    256/224 of image_size; `none` resizes each whole image to image_size x image_size. Both
    normalise by the ImageNet mean and std on the device, from uint8 batches."""
    val_path: str | list[str] = ""
    """webdataset: the test shards (as data.path); empty: a fixed test_fraction of the training
    samples is held out."""
    shard_group: int = 8
    """webdataset: shards read together: each epoch takes the shards in a seeded order, in
    groups of this many, and shuffles the samples of a group together (0: all shards, one
    global shuffle)."""
    unreadable_limit: float = 0.01
    """images, webdataset: the share of unreadable image files (corrupt, truncated, not an
    image) tolerated: each is skipped with a warning, its place in the batch taken by another
    image of the batch; beyond this share (and beyond one file, however few the images; 0:
    none at all) the run stops with an error."""
    builder: str = ""
    """Your own data instead of `name`: "package.module:function", imported from the recipe's
    folder or PYTHONPATH and called as `function(**args)` on every rank; it returns an
    `hvdkit.data.Dataset` or a tuple (x_train, y_train, x_test, y_test) of numpy arrays."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `builder`."""


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw", "lamb"]
    """Optimizer, the same update on both frameworks: `sgd` (with `momentum`), `adam`, `adamw`
    (Adam with decoupled weight decay) or `lamb` (the Adam direction plus decay, scaled per
    tensor by ||w|| / ||direction||; not with parallel.sync zero1, whose shards cut tensors).
    Adam's epsilon is 1e-8, LAMB's 1e-6; betas 0.9, 0.999."""
    lr: float = 0.01
    """Base learning rate, for one worker."""
    momentum: float = 0.0
    """SGD momentum (sgd only: another optimizer refuses a value other than 0)."""
    weight_decay: float = 0.0
    """sgd, adam: L2, wd * w added to the gradient before the update (torch's
    `weight_decay`); adamw: decoupled, w -= lr * wd * w beside the Adam step; lamb: wd * w
    added to the Adam direction, inside the trust ratio."""
    schedule: Literal["constant", "cosine", "step"] = "constant"
    """Learning-rate schedule after warm-up."""
    step_every_epochs: int = 10
    """Epochs between decays (schedule: step; another schedule refuses a value other than 10)."""
    step_gamma: float = 0.1
    """Decay factor (schedule: step; another schedule refuses a value other than 0.1)."""
    scale_by_world: bool = False
    """Multiply lr by the number of data-parallel workers (the linear scaling rule)."""
    warmup_epochs: float = 0.0
    """Epochs over which lr ramps linearly up to its (scaled) value."""
    clip_norm: float = 0.0
    """Clip the global gradient norm, over the whole model (every pipeline stage, every ZeRO-1
    shard) after the replicas' exchange, to this value (0: off); the same on every rank."""
    READ_ONLY_BY: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "momentum": ("name", ("sgd",)),
        "step_every_epochs": ("schedule", ("step",)),
        "step_gamma": ("schedule", ("step",)),
    }
    """Fields that only some optimizers or schedules read: field -> (the field that chooses,
    the choices that read it). Not a recipe field."""

    def ignored(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """The fields set away from their defaults that this optimizer and schedule would
        ignore, as (field, the field that chooses, the choices that read it)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return [(key, chooser, users) for key, (chooser, users) in self.READ_ONLY_BY.items()
                if getattr(self, key) != defaults[key] and getattr(self, chooser) not in users]


@dataclass
class TrainConfig:
    batch_size: int = 32
    """Samples per rank per backward pass (one micro-batch when accumulating)."""
    epochs: int = 1
    """Passes over the training set."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: no limit)."""
    seed: int = 0
    """Seed of the initial weights and of the data order, the same on every rank."""
    eval_every_epochs: int = 1
    """Evaluate on the test set every this many epochs (and always at the end)."""
    log_every_steps: int = 10
    """Average metrics across ranks and log them every this many steps."""
    threads: int = 0
    """Intra-op threads per rank (0: the cores divided by the ranks on the host)."""
    host_allocator: Literal["tuned", "system"] = "tuned"
    """The C allocator of each rank's host memory (glibc): tuned reuses freed blocks up to 32 MiB
    instead of returning them to the system at every free (hvdkit.runtime.allocator); system
    leaves glibc's defaults."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """Where each rank trains: auto (its own GPU when the host has GPUs, else the CPU), cpu, or
    gpu (an error without one). Rank i on a host takes GPU i."""
    timing_warmup_steps: int = 2
    """Steps before the barrier-timed throughput window opens (tracing, allocations)."""
    checkpoint_every_steps: int = 0
    """Write a checkpoint every this many optimizer steps (0: only at the end of training).
    Checkpoints go to <run dir>/checkpoints; a run without a run folder writes none."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Compute precision of forward and loss: fp32, or mixed bf16 / fp16 (weights, gradients
    and the optimizer stay fp32). fp16 scales the loss dynamically (loss_scale). On a CPU
    without native bf16 / fp16 (no AVX-512 BF16 / FP16 or AMX) it is refused unless
    precision_force: emulated, it runs several times slower than fp32."""
    precision_force: bool = False
    """Run train.precision bf16 / fp16 on a CPU that only emulates it, which is refused
    otherwise: on an AVX2 CPU a step ran 2x (a small CNN) to 13-14x (ResNet-18) slower than in
    fp32 (hvdkit.runtime.cpu_precision). No effect on a GPU or a CPU with native support."""
    loss_scale: float = 65536.0
    """fp16: the initial loss scale. A step whose gradients overflow on any rank is skipped on
    every rank and the scale halved (hvdkit.parallel.loss_scale)."""
    loss_scale_growth_steps: int = 2000
    """fp16: consecutive finite steps after which the loss scale doubles."""
    compile: bool = False
    """Compile the model: `torch.compile` (each pipeline chunk on its own) or XLA
    (`jit_compile=True`) for TensorFlow's step. The first steps, which compile, are reported
    as `compile_seconds` and kept out of the timed window."""
    commit_every_steps: int = 10
    """Elastic runs: commit the state in memory every this many steps (a lost worker costs at
    most this many steps of repeated work)."""


@dataclass
class ParallelConfig:
    reduction: Literal["average", "sum", "adasum"] = "average"
    """How Horovod combines the ranks' gradients."""
    compression: Literal["none", "fp16", "powersgd"] = "none"
    """Gradient compression on the wire: fp16 halves; powersgd sends low-rank factors of each
    weight matrix with error feedback (hvdkit.parallel.powersgd)."""
    powersgd_rank: int = 2
    """Rank of PowerSGD's factors (compression: powersgd)."""
    powersgd_warmup_steps: int = 10
    """Optimizer steps exchanged uncompressed before PowerSGD starts (compression: powersgd)."""
    accumulation: int = 1
    """Backward passes per optimizer step (gradient accumulation)."""
    sync: Literal["allreduce", "ps", "zero1", "none"] = "allreduce"
    """Gradient exchange: Horovod's ring-allreduce, a parameter server on rank 0 (mpi4py),
    zero1: reduce-scatter, each rank steps the optimizer on its shard of the parameters and
    holds only that shard's state, all-gather (hvdkit.parallel.zero), or none: no exchange,
    each rank steps on its own gradients and the replicas drift apart — a measurement (the
    compute of N ranks sharing their hosts, the ceiling a scaling study compares against;
    `hvdkit predict` calibrates with it), not training of one model."""
    stages: int = 1
    """Pipeline stages, one rank each; world size = stages x data-parallel degree."""
    microbatches: int = 1
    """Micro-batches per batch in a pipeline (train.batch_size must divide by it)."""
    schedule: Literal["gpipe", "1f1b", "interleaved", "zb-h1"] = "1f1b"
    """Pipeline schedule: all forwards then all backwards, one-forward-one-backward, 1F1B over
    `virtual_stages` chunks per stage, or zero-bubble ZB-H1 (backward split into the input's
    gradient, sent at once, and the weights', deferred into idle slots)."""
    virtual_stages: int = 1
    """Chunks per stage for schedule interleaved: the model is cut into stages x this many
    chunks and stage s holds chunks s, s + stages, ... (microbatches a multiple of stages)."""
    split: Literal["params", "time"] = "params"
    """Balanced cut of the layers into stages: by parameter count, or by each layer's measured
    forward and backward time on one micro-batch."""
    boundaries: list[int] = field(default_factory=list)
    """Explicit cut instead: the first layer (0-based, layers with parameters) of each stage
    after the first, e.g. [2] for 2 stages."""
    placement: list[str] = field(default_factory=list)
    """A device per model part (cpu, cuda:i / /CPU:0, /GPU:i); see hvdkit.parallel.placement."""


@dataclass
class Recipe:
    model: ModelConfig
    data: DataConfig
    optimizer: OptimizerConfig
    name: str = "run"
    """Name of the recipe; the default run folder starts with it."""
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    folder: ClassVar[str | None] = None
    """The recipe file's folder, where model and data builders are looked for first (set by
    `load_recipe`; not a recipe field)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short hash of the resolved recipe, to tell checkpoints of other recipes apart."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
