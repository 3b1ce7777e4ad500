# The two commands a newcomer needs: `make run` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.installed
TESTED  := $(VENV)/.test-installed
PACKAGED := $(VENV)/.package-installed
# Debian packages the tests judge the output with: docker.io brings dockerd, containerd,
# ctr and runc (the tests start private daemons of their own); busybox-static is the root
# of the image the tests build with Docker.
TEST_DEBS := skopeo umoci podman docker-registry redis-server chromium docker.io busybox-static
BENCH_DEBS := debootstrap umoci skopeo docker-registry redis-server wrk time docker.io
# `make image` builds on a Debian root of its own, in a private dockerd.
IMAGE_DEBS := debootstrap docker.io

.PHONY: install test-install run test lint typecheck image image-test bench profile fuzz soak debs clean

install: $(STAMP)
test-install: $(TESTED)

# The merger's core is compiled (Cython) by pip with the machine's own compiler; setup.py
# builds every .pyx under squash/.
CORE := setup.py $(shell find squash -name '*.pyx' -o -name '*.pxd')

$(STAMP): pyproject.toml $(CORE)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $(STAMP)

# The tests' own tools (pytest, moto, ruff, mypy, ...): the `test` dependency group.
$(TESTED): $(STAMP)
	$(PIP) install --quiet --group test
	touch $(TESTED)

# `python -m build`, for `make image`'s wheels: the `package` dependency group.
$(PACKAGED): $(STAMP)
	$(PIP) install --quiet --group package
	touch $(PACKAGED)

# Installs the Debian packages named in $(DEBS) that are missing (needs root).
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq $$missing; \
	fi

# The embedded default: one process on 127.0.0.1:$(PORT), artifacts under ~/.cache/squashd,
# builds in-process; no Redis, no S3. SQUASHD_REGISTRY picks the upstream (Docker Hub).
PORT ?= 8000
run: install
	PORT=$(PORT) $(VENV)/bin/squashd-web

lint: test-install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy: strict for squash/, storage/ and service/, default elsewhere (pyproject.toml says which).
typecheck: test-install
	$(VENV)/bin/mypy

test: lint typecheck
	$(MAKE) --no-print-directory debs DEBS="$(TEST_DEBS)"
	$(PY) -m pytest -q -p no:cacheprovider --ignore=tests/image

# squashd's image, tagged squashd:VERSION and squashd:latest, as a `docker load` archive:
# dist/squashd-image.tar. Built offline (deploy/build_image.py): the Dockerfile on a
# Debian root made by debootstrap, kept in dist/image-base, from wheels in dist/wheels.
image: $(PACKAGED)
	$(MAKE) --no-print-directory debs DEBS="$(IMAGE_DEBS)"
	$(PY) deploy/build_image.py

# The image built (`make image`) and run by a private dockerd: a few minutes, so apart
# from `make test` (.ci/run runs both).
image-test: test-install
	$(MAKE) --no-print-directory debs DEBS="$(TEST_DEBS) $(IMAGE_DEBS)"
	$(PY) -m pytest -q -p no:cacheprovider tests/image

bench: test-install
	$(MAKE) --no-print-directory debs DEBS="$(BENCH_DEBS)"
	$(PY) bench/squash_bench.py
	$(PY) bench/service_bench.py
	$(PY) bench/pull_bench.py

# Where the web's time goes under the service bench's wrk runs (py-spy, sampling from
# outside): the heaviest functions, and the stacks under bench/work/profile.
profile: test-install
	$(MAKE) --no-print-directory debs DEBS="$(BENCH_DEBS)"
	$(PIP) install --quiet --group bench
	$(PY) bench/service_bench.py --repeat 1 --profile bench/work/profile

# The soak test, long: rounds of images requested at once while workers are killed, Redis
# restarted empty, S3 and the registry frozen (`make test` runs one short round).
SOAK_ROUNDS ?= 5
SOAK_IMAGES ?= 6
soak: test-install
	$(MAKE) --no-print-directory debs DEBS="$(TEST_DEBS)"
	SQUASHD_SOAK_ROUNDS=$(SOAK_ROUNDS) SQUASHD_SOAK_IMAGES=$(SOAK_IMAGES) \
		$(PY) -m pytest -q -s -p no:cacheprovider tests/service/test_soak.py

# The fuzz target over the compiled core, instrumented (clang, libFuzzer, ASan), for
# FUZZ_SECONDS (default 600); `make test` runs it briefly, uninstrumented.
fuzz: test-install
	$(MAKE) --no-print-directory debs DEBS="clang"
	$(PIP) install --quiet --group fuzz
	tests/fuzz/run

clean:
	rm -rf $(VENV) bench/work dist .pytest_cache .hypothesis
