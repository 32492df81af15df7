"""A GPT-style decoder-only transformer in Keras 3, the same architecture and parameter count
as hvdkit/adapters/torch/gpt.py (see there for the design).

The model is a `keras.Sequential` of `Embeddings`, one `Block` per layer and `Head`, so
`model.layers` lists the same layers a pipeline cuts as PyTorch's `children()`. `Head` holds
the token embedding's variable itself (tracked as its weight), so the head is tied: the model's
weights list it once, and a pipeline's last stage finds it among the head's weights.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from hvdkit.adapters.tensorflow.models import MODELS
from hvdkit.config import ModelConfig
from hvdkit.models.catalogue import check_sequences

STD = 0.02
LN_EPS = 1e-5


def dense(units: int, std: float = STD) -> keras.layers.Dense:
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.RandomNormal(0.0, std))


def layer_norm() -> keras.layers.LayerNormalization:
    return keras.layers.LayerNormalization(epsilon=LN_EPS)


class Embeddings(keras.layers.Layer):
    def __init__(self, vocab: int, block_size: int, width: int, dropout: float,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        init = keras.initializers.RandomNormal(0.0, STD)
        self.tok = keras.layers.Embedding(vocab, width, embeddings_initializer=init)
        self.pos = keras.layers.Embedding(block_size, width, embeddings_initializer=init)
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape: Any) -> None:
        self.tok.build(input_shape)
        self.pos.build((None,))

    def call(self, idx: Any, training: Any = None) -> Any:
        positions = self.pos(ops.arange(ops.shape(idx)[1]))
        return self.drop(self.tok(idx) + positions[None], training=training)


class Block(keras.layers.Layer):
    """x + attention(norm(x)), then x + mlp(norm(x)); causal: position t sees 0..t."""

    def __init__(self, width: int, heads: int, dropout: float, layers: int,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        residual_std = STD / math.sqrt(2 * layers)
        self.width, self.heads = width, heads
        self.ln1, self.ln2 = layer_norm(), layer_norm()
        self.qkv = dense(3 * width)
        self.proj = dense(width, residual_std)
        self.fc = dense(4 * width)
        self.fc2 = dense(width, residual_std)
        self.attn_drop = keras.layers.Dropout(dropout)
        self.drop = keras.layers.Dropout(dropout)

    def attention(self, x: Any, training: Any) -> Any:
        n, t = ops.shape(x)[0], ops.shape(x)[1]
        head = self.width // self.heads
        qkv = ops.reshape(self.qkv(x), (n, t, 3, self.heads, head))
        q, k, v = (ops.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))  # (N, H, T, D)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(head)
        causal = ops.tril(ops.ones((t, t), dtype="bool"))
        scores = ops.where(causal, scores, ops.full_like(scores, -1e9))
        weights = self.attn_drop(ops.softmax(scores, axis=-1), training=training)
        y = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))
        return self.proj(ops.reshape(y, (n, t, self.width)))

    def call(self, x: Any, training: Any = None) -> Any:
        x = x + self.drop(self.attention(self.ln1(x), training), training=training)
        mlp = self.fc2(ops.gelu(self.fc(self.ln2(x)), approximate=True))
        return x + self.drop(mlp, training=training)


class Head(keras.layers.Layer):
    """Final layer norm, then logits = x · Eᵀ with E the token embedding (tied)."""

    def __init__(self, embedding: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ln = layer_norm()
        self.embedding = embedding  # a variable attribute: tracked as this layer's weight

    def call(self, x: Any) -> Any:
        return ops.matmul(self.ln(x), ops.transpose(self.embedding))


@MODELS.register("gpt")
def gpt(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Sequences of `input_shape` = (T,) token ids below `num_classes` (the vocabulary)."""
    check_sequences(config, input_shape)
    embeddings = Embeddings(num_classes, config.block_size, config.width, config.dropout)
    embeddings.build((None, *input_shape))
    blocks = [Block(config.width, config.heads, config.dropout, config.layers)
              for _ in range(config.layers)]
    head = Head(embeddings.tok.embeddings)
    return keras.Sequential([keras.Input(input_shape, dtype="int64"), embeddings, *blocks, head])
