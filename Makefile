# lineside — every set-up step lives here, so a fresh clone needs only `make run` or `make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/sim.toml
# Debian packages the node and its tests need (installed when missing; root or sudo):
# Aravis and its fake GigE Vision camera, what PyGObject needs to build, and mbpoll
# (an independent Modbus client the tests read the node-facing registers with), and
# Chromium with its chromedriver (the web view's tests drive a real headless browser), and
# a Japanese font (the web view's pages and trend plots in Japanese), and the Mosquitto MQTT
# broker with its clients (the Sparkplug B publisher's tests run a real broker).
DEBS   := aravis-tools gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev pkg-config gcc mbpoll \
          chromium chromium-driver fonts-ipafont-gothic mosquitto mosquitto-clients

.PHONY: run test hil lint bench teach model sysdeps clean

run: $(STAMP)
	$(BIN)/lineside teach $(CONFIG) --if-missing
	$(BIN)/lineside run $(CONFIG)

test: $(STAMP)
	$(BIN)/ruff check node drivers models hil bench tests
	$(BIN)/mypy
	$(BIN)/pytest -q -m "not hil"

# The node on the simulated line behind the Modbus PLC emulator (configs/opcua.toml: OPC UA).
hil: $(STAMP)
	$(BIN)/python -m hil.plc_line configs/modbus.toml

lint: $(STAMP)
	$(BIN)/ruff check node drivers models hil bench tests
	$(BIN)/ruff format --check node drivers models hil bench tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py --parts 2000 --rate 20

# Rebuild the demo defect model package (about 16 minutes on 2 cores).
model: $(STAMP)
	$(BIN)/python -m models.train.demo --out models/demo --work state/demo-data

teach: $(STAMP)
	$(BIN)/lineside teach $(CONFIG)

sysdeps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml | sysdeps
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,aravis,harvesters]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
