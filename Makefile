# Batch Normalization course: every set-up step lives here, so a fresh clone needs only
# Python 3.11+ and make. `make book` and `make test` are the two commands in the README.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
PS     ?= ps01

# TensorFlow writes log lines to stderr on import; they would land in pages and can zero a
# correct answer in nbgrader (a grade cell with stderr output scores 0).
export TF_CPP_MIN_LOG_LEVEL := 2
export TF_ENABLE_ONEDNN_OPTS := 0
export KERAS_BACKEND ?= tensorflow
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help env book test test-fast lab check release autograde feedback grades bench clean

help:
	@echo "make book       set up .venv and build the site into _build/html"
	@echo "make test       set up .venv and run every test (book build and autograding included)"
	@echo "make test-fast  the quick tests only (no book build, no nbgrader runs)"
	@echo "make lab        JupyterLab on the problem sets, with nbgrader's student extensions"
	@echo "make check PS=ps01 [NB=path]   self-check a problem set against its visible tests"
	@echo "make release PS=ps01           regenerate exercises/ps01 from solutions/ps01"
	@echo "make autograde PS=ps01 SUBMISSIONS=dir|zip   import and grade a class"
	@echo "make feedback PS=ps01          HTML feedback (hidden tests removed)"
	@echo "make grades                    export grades to _grading/grades.csv"
	@echo "make bench     BN speed and memory benchmarks (ratios; writes benchmarks/results.json)"

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . -n -W --keep-going
	@echo
	@echo "Open the book: file://$(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile -p no:cacheprovider -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -m "not slow" -p no:cacheprovider

lab: $(STAMP)
	$(BIN)/jupyter lab exercises/

check: $(STAMP)
	$(BIN)/python -m instructor check $(PS) $(if $(NB),--notebook $(NB))

release: $(STAMP)
	$(BIN)/python -m instructor release $(PS)

autograde: $(STAMP)
	$(BIN)/python -m instructor autograde $(PS) --submissions $(SUBMISSIONS)

feedback: $(STAMP)
	$(BIN)/python -m instructor feedback $(PS)

grades: $(STAMP)
	$(BIN)/python -m instructor grades

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_bn.py

clean:
	rm -rf _build .pytest_cache
