"""NumPy reference implementation of Batch Normalization (Ioffe & Szegedy, 2015).

Everything here is plain NumPy and float64-friendly: it is the oracle the Keras layer, the
chapters and the problem-set checks are compared against, and it is itself checked against
numeric gradients (``tests/test_reference.py``).

Notation follows the paper. For a mini-batch ``B = {x_1..x_m}`` of one feature:

    mu_B      = 1/m * sum_i x_i
    sigma2_B  = 1/m * sum_i (x_i - mu_B)**2          # biased: divides by m
    xhat_i    = (x_i - mu_B) / sqrt(sigma2_B + eps)
    y_i       = gamma * xhat_i + beta

``axis`` is the feature (channel) axis, as in ``keras.layers.BatchNormalization``: statistics
are reduced over every other axis (N for dense layers; N, H, W for images).
"""

import numpy as np

__all__ = [
    "reduction_axes",
    "per_feature",
    "batchnorm_forward_train",
    "batchnorm_forward_inference",
    "batchnorm_backward",
    "update_moving_average",
    "population_statistics",
    "numeric_gradient",
    "relative_error",
]


def reduction_axes(ndim, axis=-1):
    """The axes BN reduces over: every axis except the feature axis ``axis``."""
    axis = axis % ndim
    return tuple(a for a in range(ndim) if a != axis)


def per_feature(v, ndim, axis=-1):
    """Reshape a per-feature vector so it broadcasts against an input of rank ``ndim`` whose
    feature axis is ``axis``: shape ``(C,)`` becomes ``(1, C, 1, 1)`` for ``ndim=4, axis=1``."""
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return np.reshape(v, shape)




def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    """BN in training mode (the paper's Algorithm 1).

    Args:
        x: array of any rank >= 2.
        gamma, beta: per-feature scale and shift, shape ``(x.shape[axis],)``.
        eps: added to the variance inside the square root.
        axis: the feature axis.

    Returns:
        ``(y, batch_mean, batch_var)``; ``batch_var`` is the biased variance (divides by m).
    """
    x = np.asarray(x)
    axes = reduction_axes(x.ndim, axis)
    mean = x.mean(axis=axes)
    var = ((x - per_feature(mean, x.ndim, axis)) ** 2).mean(axis=axes)
    y = batchnorm_forward_inference(x, gamma, beta, mean, var, eps, axis)
    return y, mean, var


def batchnorm_forward_inference(x, gamma, beta, mean, var, eps=1e-3, axis=-1):
    """BN with fixed statistics (inference: the moving or population mean and variance)."""
    x = np.asarray(x)
    b = lambda v: per_feature(v, x.ndim, axis)  # noqa: E731
    xhat = (x - b(mean)) / np.sqrt(b(var) + eps)
    return b(gamma) * xhat + b(beta)


def batchnorm_backward(dy, x, gamma, eps=1e-3, axis=-1):
    """Gradients of training-mode BN, given the upstream gradient ``dy = dL/dy``.

    The paper's backward equations, with m the number of values per feature:

        dxhat    = dy * gamma
        dsigma2  = sum(dxhat * (x - mu)) * -1/2 * (sigma2 + eps)**(-3/2)
        dmu      = sum(dxhat) * -1/sqrt(sigma2 + eps) + dsigma2 * sum(-2 (x - mu)) / m
        dx       = dxhat / sqrt(sigma2 + eps) + dsigma2 * 2 (x - mu) / m + dmu / m
        dgamma   = sum(dy * xhat)
        dbeta    = sum(dy)

    Returns:
        ``(dx, dgamma, dbeta)``.
    """
    x = np.asarray(x)
    dy = np.asarray(dy)
    axes = reduction_axes(x.ndim, axis)
    m = x.size // x.shape[axis]
    b = lambda v: per_feature(v, x.ndim, axis)  # noqa: E731
    mean = x.mean(axis=axes)
    xc = x - b(mean)
    var = (xc**2).mean(axis=axes)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = xc * b(inv_std)

    dxhat = dy * b(gamma)
    dvar = (dxhat * xc).sum(axis=axes) * -0.5 * inv_std**3
    dmean = -(dxhat.sum(axis=axes)) * inv_std + dvar * (-2.0 * xc.sum(axis=axes) / m)
    dx = dxhat * b(inv_std) + b(dvar) * 2.0 * xc / m + b(dmean) / m
    dgamma = (dy * xhat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    return dx, dgamma, dbeta


def update_moving_average(moving, batch_value, momentum=0.99):
    """Keras's convention: ``moving * momentum + batch_value * (1 - momentum)``.

    PyTorch writes the same update with ``momentum=0.1`` meaning the weight of the *new*
    value; Keras's 0.99 corresponds to PyTorch's 0.01.
    """
    return moving * momentum + batch_value * (1.0 - momentum)


def population_statistics(batch_means, batch_vars, batch_size):
    """The paper's Algorithm 2: inference statistics from many training mini-batches.

    ``E[x] = mean of the batch means`` and ``Var[x] = m/(m-1) * mean of the batch
    variances``, the unbiased estimate of the population variance from biased batch
    variances of batches of size m.
    """
    m = batch_size
    if m < 2:
        raise ValueError(f"`batch_size` must be at least 2 for the m/(m-1) correction. Received: batch_size={m}")
    mean = np.mean(batch_means, axis=0)
    var = m / (m - 1.0) * np.mean(batch_vars, axis=0)
    return mean, var


def numeric_gradient(f, x, h=1e-5):
    """Central-difference gradient of the scalar function ``f`` at ``x`` (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        grad[i] = (fp - fm) / (2.0 * h)
    return grad


def relative_error(a, b):
    """``||a - b|| / (||a|| + ||b||)``, the usual gradient-check measure (0 when both are 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0.0 else float(np.linalg.norm(a - b) / denom)


# --- RMSNorm (Zhang & Sennrich, 2019) ------------------------------------------------------


def _rms_axes(ndim, axis):
    """The normalized axes of RMSNorm, sorted and non-negative (``axis``: int or sequence)."""
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(sorted(a % ndim for a in axes))


def _rms_broadcast(v, ndim, axes):
    """Reshape a parameter of the normalized axes' shape to broadcast against the input."""
    shape = [1] * ndim
    for a, size in zip(axes, np.shape(v)):
        shape[a] = size
    return np.reshape(v, shape)


def rms_norm_forward(x, scale, eps=1e-6, axis=-1):
    """RMSNorm of each example over the axes ``axis`` (an int or a sequence of ints).

    ::

        rms = sqrt(mean(x**2) + eps)      # over the normalized axes, one value per example
        y   = x / rms * scale             # scale has the shape of the normalized axes

    No mean is subtracted and there is no offset: layer normalization without centring.

    Returns:
        ``(y, rms)``, ``rms`` with the normalized axes kept (size 1).
    """
    x = np.asarray(x)
    axes = _rms_axes(x.ndim, axis)
    rms = np.sqrt((x**2).mean(axis=axes, keepdims=True) + eps)
    return x / rms * _rms_broadcast(scale, x.ndim, axes), rms


def rms_norm_backward(dy, x, scale, eps=1e-6, axis=-1):
    """Gradients of :func:`rms_norm_forward`, given the upstream gradient ``dy = dL/dy``.

    With ``n`` the number of normalized values per example and ``xhat = x / rms``::

        dxhat  = dy * scale
        drms/dx_j = x_j / (n * rms)
        dx     = dxhat / rms - x * sum(dxhat * x) / (n * rms**3)     # sums per example
        dscale = sum(dy * xhat)                                      # over the other axes

    Returns:
        ``(dx, dscale)``.
    """
    x = np.asarray(x)
    dy = np.asarray(dy)
    axes = _rms_axes(x.ndim, axis)
    n = int(np.prod([x.shape[a] for a in axes]))
    _, rms = rms_norm_forward(x, scale, eps, axis)
    dxhat = dy * _rms_broadcast(scale, x.ndim, axes)
    dx = dxhat / rms - x * (dxhat * x).sum(axis=axes, keepdims=True) / (n * rms**3)
    other = tuple(a for a in range(x.ndim) if a not in axes)
    dscale = (dy * x / rms).sum(axis=other)
    return dx, dscale


__all__ += ["rms_norm_forward", "rms_norm_backward"]
