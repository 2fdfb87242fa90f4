"""Execute the book's chapters in parallel into Jupyter Book's execution cache.

``jupyter-book build`` (``execute_notebooks: cache`` in ``_config.yml``) executes the notebooks
one after the other, and a chapter's small networks keep about one core busy: on a 2-core
machine half of it idles. ``make book`` runs this script first. It executes every chapter
whose code is not in the cache yet, as many at once as the machine has cores, longest first,
and stores each executed notebook in the cache (``_build/.jupyter_cache``) exactly as the build
itself would: same cache, same matching (the hash of the code cells), same kernel, same working
folder (the notebook's own), same timeout. The build then finds every chapter in the cache and
renders it; its checks (``-W``, stderr in a page is a warning) are unchanged.

A chapter that fails here is only reported: the build executes it again itself, and fails on
it with the error in its log, as without this script. A chapter already in the cache is not
executed (``make book`` with no change to the code runs nothing).

    python scripts/execute_chapters.py [--jobs N] [--root BOOK]

``--root`` executes the chapters of another copy of the book (tests/test_book.py builds one in
a temporary folder), into that copy's cache.
"""

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The chapters that take longest, first (measured on the 2-core machine): the last one to start
# is then a short one, and the two cores finish together. A chapter not listed runs after them.
LONGEST_FIRST = ("09_reproducing_figure_1", "06_why_it_helps", "12_transformers",
                 "08_alternatives", "07_limits", "11_residual_networks_and_weight_decay",
                 "01_internal_covariate_shift", "05_training_vs_inference", "04_placement")


def cache_folder(root):
    return root / "_build" / ".jupyter_cache"


def chapters(root=ROOT):
    """The executed notebooks of the book: the chapters (the problem sets are not executed)."""
    order = {name: i for i, name in enumerate(LONGEST_FIRST)}
    paths = sorted((root / "chapters").glob("*.ipynb"))
    return sorted(paths, key=lambda p: order.get(p.stem, len(order)))


def timeout(root=ROOT):
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    return int(config.get("execute", {}).get("timeout", 30))


def execute(path, seconds, cache_path):
    """Execute one notebook as the build would and cache it in ``cache_path``; returns
    (path, seconds, error)."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.executors.utils import single_nb_execution

    cache = get_cache(str(cache_path))
    notebook = nbformat.read(str(path), as_version=4)
    result = single_nb_execution(notebook, cwd=str(path.parent), allow_errors=False,
                                 timeout=seconds, meta_override=True)
    if result.err is not None:
        return path, result.time, f"{result.err.__class__.__name__}: {result.err}"[:2000]
    cache.cache_notebook_bundle(CacheBundleIn(notebook, str(path), data={"execution_seconds": result.time}),
                                check_validity=False, overwrite=True)
    return path, result.time, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="chapters executed at once (default: the number of cores)")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the book's folder (default: this repository)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1. Received: --jobs={args.jobs}")
    root = args.root.resolve()
    if not (root / "_config.yml").is_file():
        parser.error(f"--root must be a book's folder, with a _config.yml. Received: --root={args.root}")
    cache_path = cache_folder(root)

    import nbformat
    from jupyter_cache import get_cache

    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache = get_cache(str(cache_path))
    todo = []
    for path in chapters(root):
        try:
            cache.match_cache_notebook(nbformat.read(str(path), as_version=4))
        except KeyError:  # not in the cache: its code changed, or it never ran
            todo.append(path)
    if not todo:
        print("execute_chapters: every chapter is in the cache")
        return 0
    print(f"execute_chapters: {len(todo)} chapter(s), {args.jobs} at a time", flush=True)
    start, failed = time.perf_counter(), []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        limit = timeout(root)
        futures = [pool.submit(execute, path, limit, cache_path) for path in todo]
        for future in as_completed(futures):
            path, seconds, error = future.result()
            rel = path.relative_to(root)
            if error:
                failed.append(rel)
                print(f"  {rel}: FAILED after {seconds:.1f} s (the build will run it again and "
                      f"report it): {error.splitlines()[0] if error else ''}", flush=True)
            else:
                print(f"  {rel}: executed in {seconds:.1f} s", flush=True)
    print(f"execute_chapters: {time.perf_counter() - start:.1f} s wall, "
          f"{len(todo) - len(failed)} cached, {len(failed)} failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
