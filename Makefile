# Set-up and everyday commands. Only python3 (>= 3.11) is needed on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install serve test lint typecheck bench bench-coldstart bench-scale bench-async bench-auth bench-websocket bench-durable bench-images bench-snapstart bench-streaming bench-sigv4 bench-sources bench-density bench-cluster bench-console conformance clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/lamina serve $(ARGS)

lint: install
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: install
	$(BIN)/mypy

# The whole suite on the default backend (namespace as root), then the functional tests again
# on the process backend: the same function code must pass on both. Modules marked
# `control_plane` (the API, its stores and tools, or servers that pin their backend) would
# only repeat the first pass, and are left out of the second.
test: install lint typecheck
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python -m pytest $(PYTEST_ARGS)
	AWS_EC2_METADATA_DISABLED=true LAMINA_TEST_SANDBOX=process $(BIN)/python -m pytest tests/integration -m "not control_plane" $(PYTEST_ARGS)

# Warm invokes at the defaults (auth on, default sandbox, MemorySize 1024) beside the floor;
# ARGS="--peers" adds serverless-offline (npm-installed into bench/.peers/ on first use).
bench: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/invoke.py $(ARGS)

bench-coldstart: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/coldstart.py $(ARGS)

bench-scale: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/scale.py $(ARGS)

bench-async: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/async.py $(ARGS)

# WebSocket APIs: messages/s and round-trip p50 echoed through a function at 1 and 64
# connections, beside a bare websockets echo server (the floor).
bench-websocket: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/websocket.py $(ARGS)

# Durable functions with AWS's Python SDK: a 10-step workflow (steps/s, checkpoint p50/p99)
# and 1,000 executions suspended on a wait (memory held, environments, time to resume; ~4 min).
bench-durable: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/durable.py $(ARGS)

# Container images: pull + unpack of a ~90 MB image beside `skopeo copy` of it, and cold starts
# of an image function beside the same code as zips (needs docker-registry and skopeo).
bench-images: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/images.py $(ARGS)

# SnapStart (as root): cold starts of a numpy/Pillow/pydantic/requests function with and
# without it, a no-op with it and the fork floor; memory of restored idle environments.
bench-snapstart: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/snapstart.py $(ARGS)

bench-streaming: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/streaming.py $(ARGS)

bench-auth: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/auth.py $(ARGS)

# SigV4 verification alone (Lamina's Verifier, in-process): µs per verification.
bench-sigv4: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/sigv4.py $(ARGS)

# RabbitMQ event source: messages/s and publish-to-handler latency (needs RabbitMQ at :5672).
bench-sources: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/sources.py $(ARGS)

# 1,000 functions with one warm idle environment each: USS of the server and of each
# environment, cold starts on a second pass, warm p50 beside the crowd (~3 minutes).
bench-density: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/density.py $(ARGS)

# A cluster of 1, 2 and 4 nodes (own PostgreSQL and NATS, each node in a CPU-capped cgroup):
# warm invoke scaling and the latency a forwarded invoke adds (as root, ~2 minutes).
bench-cluster: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/cluster.py $(ARGS)

# The web console's first contentful paint in headless Chromium (sign-in page, functions list)
# beside /health from the same server (needs chromium and chromium-driver from apt).
bench-console: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/console.py $(ARGS)

# Which operations of botocore's lambda model Lamina serves (not part of `make test`).
conformance: install
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python tools/conformance.py $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
