# Batch Normalization course: every set-up step lives here, so a fresh clone needs only
# Python 3.11+ and make. `make book` and `make test` are the two commands in the README.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  := $(shell nproc 2>/dev/null || echo 2)
# make test runs one pytest worker more than there are cores: its grading and notebook tests
# spend much of their time waiting on subprocesses (with one worker per core, 1.5 of 2 cores
# were busy on average).
JOBS   ?= $(shell echo $$(( $(CORES) + 1 )))
PS     ?= ps01

# TensorFlow writes log lines to stderr on import; they would land in pages and can zero a
# correct answer in nbgrader (a grade cell with stderr output scores 0).
export TF_CPP_MIN_LOG_LEVEL := 2
export TF_ENABLE_ONEDNN_OPTS := 0
export KERAS_BACKEND ?= tensorflow
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help env browser book lint test test-fast test-colab lab check release autograde feedback grades bench bench-grading adversarial-report sandbox postgres test-postgres clean

help:
	@echo "make book       set up .venv and build the site into _build/html"
	@echo "make test       set up .venv and run every test (book build and autograding included)"
	@echo "make test-fast  the quick tests only (no book build, no nbgrader runs)"
	@echo "make lint       ruff on the Python modules (part of make test)"
	@echo "make test-jax   the layer tests on the JAX backend (make test runs all but the compositions)"
	@echo "make test-colab the Colab stand-in with every chapter run to its end"
	@echo "make lab        JupyterLab on the problem sets, with nbgrader's student extensions"
	@echo "make browser    install Debian's Chromium and chromedriver for the browser test (root)"
	@echo "make check PS=ps01 [NB=path]   self-check a problem set against its visible tests"
	@echo "                               (PS: a set's full id, ps01_numpy_batchnorm, or its number)"
	@echo "make release PS=ps01           regenerate exercises/PS from solutions/PS"
	@echo "make autograde PS=ps01 SUBMISSIONS=dir|zip   import and grade a class"
	@echo "make feedback PS=ps01          HTML feedback (hidden tests removed)"
	@echo "make grades                    export grades to _grading/grades.csv"
	@echo "make report PS=ps01            class mistake report from the verdict records: _grading/reports/PS/"
	@echo "make sandbox    install bubblewrap, the grading sandbox (root; make autograde does it)"
	@echo "make adversarial-report        grade the hostile/broken ps01 class; print case -> score -> message"
	@echo "make test-postgres             the grader against a real PostgreSQL server it starts itself"
	@echo "make bench-grading             stock nbgrader autograde vs ours, 20 x ps03 (ratio, peak memory)"
	@echo "make bench-class [STUDENTS=300]  grade a generated class of ps01 and ps02 (time, memory, N machines)"
	@echo "make bench     BN speed and memory benchmarks (ratios; writes benchmarks/results.json)"

env: $(STAMP)

# pip compiles the packages' bytecode on one core; compileall -j 0 does it on all of them (the
# same .pyc files; a clean set-up takes 95 s instead of 139 s on two cores).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -r requirements.lock
	$(BIN)/python -m compileall -q -j 0 $$($(BIN)/python -c "import sysconfig; print(sysconfig.get_path('purelib'))") >/dev/null \
	  || echo "note: some files of the packages did not compile; they are compiled on import"
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Debian's Chromium and chromedriver, for the browser test of the site (tests/site_browser.py).
# Installed when missing and make runs as root (CI does); otherwise the test is skipped and says
# how to install them. No browser is ever downloaded by a test.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
	  echo "note: Chromium is not installed, so the browser test will be skipped (sudo make browser)"; \
	fi

# bubblewrap, the sandbox student code runs in when a class is graded (instructor/sandbox.py).
# Installed when missing and make runs as root (CI does); otherwise grading still works, after a
# loud warning that student code is then NOT isolated from this user's files and the network.
sandbox:
	@if command -v bwrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing bubblewrap (apt-get), the grading sandbox"; \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	   (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null)); \
	else \
	  echo "WARNING: bubblewrap is not installed: student code will not be sandboxed (sudo make sandbox)"; \
	fi

# The chapters are executed first, as many at once as there are cores, into the build's own
# cache (scripts/execute_chapters.py); the build then renders them from it.
book: $(STAMP)
	$(BIN)/python scripts/execute_chapters.py
	$(BIN)/jupyter-book build . -n -W --keep-going
	@echo
	@echo "Open the book: file://$(CURDIR)/_build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check .

# TensorFlow gets one thread per process in make test: its workers already run side by side,
# and two thread pools per core slow each other down. Training numbers then differ slightly
# from make book's (rounding; CONTRIBUTING.md, "Conventions"), with the same verdicts.
test: $(STAMP) lint browser sandbox postgres
	TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
	  $(BIN)/python -m pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder -p no:cacheprovider -ra --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -m "not slow" -p no:cacheprovider

# The Colab stand-in with every chapter run to its end (make test runs the long chapters'
# set-up and imports only; the book build runs them in full).
test-colab: $(STAMP)
	COLAB_STANDIN=full $(BIN)/python -m pytest -p no:cacheprovider -rs tests/test_colab.py

test-jax: $(STAMP)
	KERAS_BACKEND=jax JAX_ENABLE_X64=1 JAX_PLATFORMS=cpu $(BIN)/python -m pytest -p no:cacheprovider -rs \
		$(shell $(BIN)/python -c "import sys; sys.path.insert(0, 'tests'); import test_jax_backend as t; print(*t.LAYER_TESTS)")

# lab/ holds the student set-up: nbgrader's student extensions (assignment list, validate), not
# the instructor's formgrader and create-assignment toolbar.
lab: $(STAMP)
	JUPYTER_CONFIG_PATH=$(CURDIR)/lab$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH)) \
	  $(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) exercises/

check: $(STAMP)
	$(BIN)/python -m instructor check $(PS) $(if $(NB),--notebook $(NB))

release: $(STAMP)
	$(BIN)/python -m instructor release $(PS)

autograde: $(STAMP) sandbox
	$(BIN)/python -m instructor autograde $(PS) --submissions $(SUBMISSIONS) $(if $(WORKERS),--workers $(WORKERS))

feedback: $(STAMP)
	$(BIN)/python -m instructor feedback $(PS)

grades: $(STAMP)
	$(BIN)/python -m instructor grades

.PHONY: report bench-class
report: $(STAMP)
	$(BIN)/python -m instructor report $(PS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_bn.py

bench-grading: $(STAMP) sandbox
	$(BIN)/python benchmarks/bench_grading.py

bench-class: $(STAMP) sandbox
	$(BIN)/python benchmarks/bench_class.py $(if $(STUDENTS),--students $(STUDENTS))

adversarial-report: $(STAMP) sandbox
	$(BIN)/python tests/test_grading_adversarial.py

# Debian's PostgreSQL server, for tests/test_grading_postgres.py (it starts a throwaway server
# of its own). Installed when missing and make runs as root; otherwise that test is skipped.
postgres:
	@if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing postgresql (apt-get), for the PostgreSQL gradebook test"; \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 || \
	   (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null)); \
	else \
	  echo "note: PostgreSQL is not installed, so the PostgreSQL gradebook test will be skipped"; \
	fi

test-postgres: $(STAMP) sandbox postgres
	$(BIN)/python -m pytest -p no:cacheprovider -rs tests/test_grading_postgres.py

clean:
	rm -rf _build .pytest_cache
