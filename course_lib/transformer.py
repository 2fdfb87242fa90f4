"""A small transformer encoder block, pre-norm or post-norm, with course_lib's normalizations.

Where the normalization sits is the difference between the two classic layouts:

```
post-norm (Vaswani et al., 2017):   x = Norm(x + Attn(x));       x = Norm(x + FF(x))
pre-norm  (Xiong et al., 2020):     x = x + Attn(Norm(x));       x = x + FF(Norm(x))
```

Post-norm normalizes the residual stream itself; pre-norm leaves it untouched (an identity
path from input to output) and normalizes only what enters each sublayer, which is why deep
pre-norm stacks train without a learning-rate warm-up and end with one last ``Norm``.
``Norm`` is :class:`course_lib.LayerNormalization` or :class:`course_lib.RMSNormalization`
(Zhang & Sennrich, 2019), normalizing each position over its ``d_model`` features: unlike
batch normalization, nothing mixes the examples of a batch or the positions of a sequence.

References:
    Vaswani et al., "Attention Is All You Need", NeurIPS 2017. https://arxiv.org/abs/1706.03762
    Xiong et al., "On Layer Normalization in the Transformer Architecture", ICML 2020.
    https://arxiv.org/abs/2002.04745
"""

import math
import numbers

import keras
from keras import ops

from course_lib._common import check_bool as _check_bool
from course_lib.layer_normalization import LayerNormalization
from course_lib.rms_normalization import RMSNormalization

__all__ = ["TransformerBlock", "TokenAndPositionEmbedding", "build_transformer_classifier"]

_NORMS = ("layer", "rms")
_POSITIONS = ("pre", "post")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}"
        )
    return value


def _check_dropout(dropout):
    if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
            or not 0.0 <= dropout < 1.0):
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    return float(dropout)


def _check_epsilon(epsilon):
    if (isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real)
            or not 0.0 < epsilon < math.inf):
        raise ValueError(
            f"`epsilon` must be a positive finite number. Received: epsilon={epsilon!r}"
        )
    return float(epsilon)


def _make_norm(norm, epsilon, name, dtype):
    if norm == "rms":
        return RMSNormalization(epsilon=epsilon, name=name, dtype=dtype)
    return LayerNormalization(epsilon=epsilon, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="course_lib")
class TransformerBlock(keras.layers.Layer):
    """One transformer encoder block: self-attention then a feed-forward network, each in a
    residual branch, with the normalization before (``"pre"``) or after (``"post"``) it.

    ```
    pre:   x = x + Dropout(Attn(N1(x)));    y = x + Dropout(FF(N2(x)))
    post:  x = N1(x + Dropout(Attn(x)));    y = N2(x + Dropout(FF(x)))
    FF(h) = Dense(d_model)(activation(Dense(ff_dim)(h)))
    ```

    ``Attn`` is ``keras.layers.MultiHeadAttention`` with ``num_heads`` heads of size
    ``d_model // num_heads``; ``N1``, ``N2`` are ``course_lib.LayerNormalization`` or
    ``course_lib.RMSNormalization`` over the last axis. The sublayers are attributes, for
    inspection: ``attention``, ``attention_norm``, ``ffn_inner``, ``ffn_outer``, ``ffn_norm``.

    Args:
        d_model: Width of the residual stream: the last axis of the inputs and outputs.
        num_heads: Number of attention heads; must divide ``d_model``.
        ff_dim: Width of the feed-forward network's hidden layer (commonly 4 * d_model).
        norm: ``"layer"`` (LayerNormalization) or ``"rms"`` (RMSNormalization).
        norm_position: ``"pre"`` or ``"post"``, see above.
        dropout: Rate of the dropout on the attention weights and on each branch's output
            before the residual sum. Active only with ``training=True``.
        causal: If True, position ``t`` attends only to positions ``<= t`` (a decoder-style
            mask), so no output depends on later tokens.
        activation: Activation of the feed-forward hidden layer.
        epsilon: The normalizations' epsilon.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A tensor ``(batch, length, d_model)``.
        training: Whether dropout is active.
        mask: Optional boolean ``(batch, length)``, False at padding positions: they are not
            attended to (as keys). Passed on to the next layer.

    >>> import numpy as np
    >>> block = TransformerBlock(d_model=8, num_heads=2, ff_dim=16, norm="rms")
    >>> tuple(block(np.zeros((3, 5, 8), "float32")).shape)
    (3, 5, 8)
    """

    def __init__(
        self,
        d_model,
        num_heads,
        ff_dim,
        norm="layer",
        norm_position="pre",
        dropout=0.0,
        causal=False,
        activation="gelu",
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        d_model = _check_positive_int("d_model", d_model)
        num_heads = _check_positive_int("num_heads", num_heads)
        if d_model % num_heads:
            raise ValueError(
                "`num_heads` must divide `d_model`. "
                f"Received: d_model={d_model}, num_heads={num_heads}"
            )
        self.d_model = d_model
        self.num_heads = num_heads
        self.ff_dim = _check_positive_int("ff_dim", ff_dim)
        self.norm = _check_choice("norm", norm, _NORMS)
        self.norm_position = _check_choice("norm_position", norm_position, _POSITIONS)
        self.dropout = _check_dropout(dropout)
        _check_bool("causal", causal)
        self.causal = causal
        self.activation = keras.activations.get(activation)
        self.epsilon = _check_epsilon(epsilon)
        self.supports_masking = True

        policy = self.dtype_policy
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=d_model // num_heads, dropout=self.dropout,
            name="attention", dtype=policy,
        )
        self.attention_norm = _make_norm(norm, self.epsilon, "attention_norm", policy)
        self.ffn_inner = keras.layers.Dense(
            self.ff_dim, activation=self.activation, name="ffn_inner", dtype=policy
        )
        self.ffn_outer = keras.layers.Dense(d_model, name="ffn_outer", dtype=policy)
        self.ffn_norm = _make_norm(norm, self.epsilon, "ffn_norm", policy)
        self.branch_dropout = keras.layers.Dropout(self.dropout, dtype=policy)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] != self.d_model:
            raise ValueError(
                "The inputs must have the shape (batch, length, d_model). "
                f"Received: input_shape={input_shape}, d_model={self.d_model}"
            )
        self.attention.build(input_shape, input_shape)
        self.attention_norm.build(input_shape)
        self.ffn_norm.build(input_shape)
        self.ffn_inner.build(input_shape)
        self.ffn_outer.build(input_shape[:-1] + (self.ff_dim,))

    def _attend(self, h, mask, training):
        out = self.attention(
            h, h, query_mask=mask, value_mask=mask, use_causal_mask=self.causal,
            training=training,
        )
        return self.branch_dropout(out, training=training)

    def _feed_forward(self, h, training):
        return self.branch_dropout(self.ffn_outer(self.ffn_inner(h)), training=training)

    def call(self, inputs, training=None, mask=None):
        x = inputs
        if self.norm_position == "pre":
            x = x + self._attend(self.attention_norm(x), mask, training)
            return x + self._feed_forward(self.ffn_norm(x), training)
        x = self.attention_norm(x + self._attend(x, mask, training))
        return self.ffn_norm(x + self._feed_forward(x, training))

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "norm": self.norm,
            "norm_position": self.norm_position,
            "dropout": self.dropout,
            "causal": self.causal,
            "activation": keras.activations.serialize(self.activation),
            "epsilon": self.epsilon,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="course_lib")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding: ``E[token_t] + P[t]``.

    Args:
        vocab_size: Number of token ids (ids are ``0 .. vocab_size - 1``).
        sequence_length: The longest sequence; positions are ``0 .. sequence_length - 1``.
        d_model: Embedding width.
        mask_zero: If True, token id 0 is padding: the layer outputs a mask (False there)
            that the transformer blocks and the pooling respect.
        **kwargs: Base layer arguments.
    """

    def __init__(self, vocab_size, sequence_length, d_model, mask_zero=False, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = _check_positive_int("vocab_size", vocab_size)
        self.sequence_length = _check_positive_int("sequence_length", sequence_length)
        self.d_model = _check_positive_int("d_model", d_model)
        _check_bool("mask_zero", mask_zero)
        self.mask_zero = mask_zero
        self.token_embedding = keras.layers.Embedding(
            self.vocab_size, self.d_model, name="token_embedding", dtype=self.dtype_policy
        )
        self.position_embedding = keras.layers.Embedding(
            self.sequence_length, self.d_model, name="position_embedding",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                "The inputs must be token ids of shape (batch, length). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        length = input_shape[1]
        if length is not None and length > self.sequence_length:
            raise ValueError(
                "The inputs are longer than `sequence_length`. "
                f"Received: input_shape={tuple(input_shape)}, "
                f"sequence_length={self.sequence_length}"
            )
        self.token_embedding.build(input_shape)
        self.position_embedding.build((input_shape[1],))

    def call(self, inputs):
        positions = ops.arange(ops.shape(inputs)[1])
        return self.token_embedding(inputs) + self.position_embedding(positions)[None]

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.d_model,)

    def get_config(self):
        config = {
            "vocab_size": self.vocab_size,
            "sequence_length": self.sequence_length,
            "d_model": self.d_model,
            "mask_zero": self.mask_zero,
        }
        return {**super().get_config(), **config}


def build_transformer_classifier(
    vocab_size,
    sequence_length,
    num_classes,
    d_model=32,
    num_heads=2,
    ff_dim=64,
    num_layers=2,
    norm="layer",
    norm_position="pre",
    dropout=0.0,
    causal=False,
    mask_zero=False,
    name="transformer_classifier",
):
    """A tiny sequence classifier: embeddings, ``num_layers`` blocks, mean pooling, logits.

    ```
    tokens (batch, sequence_length) -> TokenAndPositionEmbedding -> TransformerBlock x N
        -> [final Norm, pre-norm only] -> GlobalAveragePooling1D -> Dense(num_classes)
    ```

    Small enough to train on a CPU in seconds with the defaults. The outputs are logits::

        model = build_transformer_classifier(vocab_size=20, sequence_length=16, num_classes=2)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])

    Args:
        vocab_size, sequence_length, d_model, mask_zero: See :class:`TokenAndPositionEmbedding`.
        num_classes: Number of classes (of logits).
        num_heads, ff_dim, norm, norm_position, dropout, causal: See :class:`TransformerBlock`.
        num_layers: Number of transformer blocks.
        name: The model's name.

    Returns:
        An uncompiled ``keras.Model`` from int token ids to ``(batch, num_classes)`` logits.
    """
    num_classes = _check_positive_int("num_classes", num_classes)
    num_layers = _check_positive_int("num_layers", num_layers)
    _check_choice("norm", norm, _NORMS)
    _check_choice("norm_position", norm_position, _POSITIONS)
    inputs = keras.Input((sequence_length,), dtype="int32", name="tokens")
    x = TokenAndPositionEmbedding(
        vocab_size, sequence_length, d_model, mask_zero=mask_zero, name="embedding"
    )(inputs)
    for i in range(num_layers):
        x = TransformerBlock(
            d_model, num_heads, ff_dim, norm=norm, norm_position=norm_position,
            dropout=dropout, causal=causal, name=f"block_{i}",
        )(x)
    if norm_position == "pre":
        x = _make_norm(norm, 1e-6, "final_norm", None)(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
