"""The bundled MNIST subset, and the download path tested on a local copy of shipped data."""

import hashlib

import numpy as np
import pytest

from course_lib import data


def test_bundled_subset_shapes_and_balance():
    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    # Real digits: ink in the middle, blank corners, full 0..255 range.
    assert x_train[:, 10:18, 10:18].mean() > 5 * x_train[:, :4, :4].mean()
    assert x_train.max() == 255


def test_bundled_subset_is_deterministic_and_disjoint():
    a = data.load_mnist()
    b = data.load_mnist()
    np.testing.assert_array_equal(a[0][0], b[0][0])
    train = {hashlib.sha1(img.tobytes()).hexdigest() for img in a[0][0]}
    test = {hashlib.sha1(img.tobytes()).hexdigest() for img in a[1][0]}
    assert not train & test


def test_licence_ships_with_the_data():
    text = (data.BUNDLED_PATH.parent / "MNIST_LICENSE.txt").read_text()
    assert "CC BY-SA 3.0" in text and "LeCun" in text


def test_keras_source_downloads_through_keras(tmp_path):
    """The real download code, fed a file:// URL to an npz in Keras's format built from shipped data."""
    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    served = tmp_path / "served" / "mnist.npz"
    served.parent.mkdir()
    np.savez_compressed(served, x_train=x_train[:50], y_train=y_train[:50], x_test=x_test[:7], y_test=y_test[:7])
    cache = tmp_path / "cache"
    (xt, yt), (xs, ys) = data.load_mnist(source="keras", url=served.as_uri(), cache_dir=cache)
    np.testing.assert_array_equal(xt, x_train[:50])
    np.testing.assert_array_equal(ys, y_test[:7])
    assert (cache / "datasets" / "mnist.npz").exists()  # cached where Keras caches it


def test_keras_source_offline_fails_clearly(tmp_path):
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    with pytest.raises(RuntimeError) as info:
        data.load_mnist(source="keras", url="http://127.0.0.1:9/mnist.npz", cache_dir=tmp_path)
    message = str(info.value)
    assert "Could not download MNIST" in message and "source='bundled'" in message


def test_unknown_source_names_the_value():
    with pytest.raises(ValueError, match="Received: source='mnist'"):
        data.load_mnist(source="mnist")
