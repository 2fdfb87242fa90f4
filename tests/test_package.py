"""The package itself: the NumPy parts import without Keras, and saved models load back."""

import subprocess
import sys
import textwrap


def _run(code, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_numpy_parts_do_not_import_keras(tmp_path):
    out = _run(
        """
        import sys
        import course_lib
        from course_lib import reference, data
        from coursework import ps01_numpy_batchnorm
        course_lib.load_mnist()
        print("keras" in sys.modules, "tensorflow" in sys.modules)
        """,
        tmp_path,
    )
    assert out.split() == ["False", "False"]


def test_saved_model_loads_in_a_fresh_process(tmp_path):
    """Every registered layer round-trips through a .keras file, loaded where nothing touched it."""
    _run(
        """
        import keras, numpy as np, course_lib
        x = np.random.default_rng(0).normal(size=(4, 6, 5, 8)).astype("float32")
        model = keras.Sequential([
            keras.Input(x.shape[1:]),
            course_lib.WSConv2D(8, 3, padding="same"),
            course_lib.BatchNormalization(momentum=0.5),
            course_lib.BatchRenormalization(),
            course_lib.GroupNormalization(groups=4),
            course_lib.InstanceNormalization(),
            course_lib.LayerNormalization(axis=[1, 2]),
        ])
        model(x, training=True)
        model.save("m.keras")
        np.save("x.npy", x)
        np.save("y.npy", np.asarray(model(x)))
        """,
        tmp_path,
    )
    out = _run(
        """
        import keras, numpy as np, course_lib   # keras first: course_lib registers its layers
        model = keras.models.load_model("m.keras")
        print(sorted({type(l).__module__.split(".")[0] for l in model.layers}))
        np.testing.assert_allclose(np.asarray(model(np.load("x.npy"))), np.load("y.npy"), rtol=1e-5, atol=1e-5)
        """,
        tmp_path,
    )
    assert out.strip() == "['course_lib']"
    out = _run(
        """
        import course_lib, keras   # course_lib first: register explicitly
        course_lib.register_layers()
        print(len(keras.models.load_model("m.keras").layers))
        """,
        tmp_path,
    )
    assert out.strip() == "6"
