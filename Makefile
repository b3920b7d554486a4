# tinycil: the two commands a new user needs are `make demo` and `make test`.
# Both install what they need first (`make setup`: Debian packages when missing, a virtualenv in
# .venv with the package and its test tools). Re-running setup is cheap: it only does what is missing.

VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
TINYCIL   := $(VENV)/bin/tinycil
# PlatformIO must not look for its registry or phone home: the firmware project is self-contained.
export PLATFORMIO_SETTING_ENABLE_TELEMETRY := No
export PLATFORMIO_DISABLE_UPGRADE_CHECK := true

# Debian packages: the cross compiler with its C and C++ libraries, the emulated board, the
# bundled Fashion-MNIST, the NUCLEO flashing tools, and espeak-ng for the generated keyword set.
APT_PACKAGES := gcc-arm-none-eabi binutils-arm-none-eabi libnewlib-arm-none-eabi \
                libstdc++-arm-none-eabi-newlib qemu-system-arm dataset-fashion-mnist \
                openocd stlink-tools espeak-ng
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages test demo bench firmware clean lock

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The Python packages at the versions in constraints.txt: a TensorFlow, Keras or numpy release
# rounds differently and moves an accuracy by tenths of a point, so the results are measured with
# these. `make lock` rewrites the file from .venv after a deliberate upgrade.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

lock:
	@{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

test: setup
	$(PY) -m pytest

# The whole story on the emulated board: prepare on the host, export, build, flash (QEMU), stream
# every new task to the device, and compare its accuracy with the host reference.
demo: setup
	$(TINYCIL) run --dataset digits --board mps2_an500 -o runs/demo

# Every benchmark writes benchmarks/results/<name>.json and .md; the README's tables come from them.
BENCHMARKS := kernels memory link soak fuzz distill_cost device_width device_runs host_study
bench: setup
	@for name in $(BENCHMARKS); do echo "== benchmarks/$$name.py"; $(PY) benchmarks/$$name.py || exit 1; done
	$(PY) benchmarks/readme_tables.py

firmware: setup
	$(PY) -m platformio run -d firmware

clean:
	rm -rf firmware/.pio examples/*/.pio build .pytest_cache
