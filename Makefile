# Two entry points, each self-contained on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing, install everything from the registries, build the ROS 2
# interface packages into the venv, install this package (editable), then run.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.g2s-ready
SETUP_INPUTS := requirements.txt requirements-build.txt setup.py $(wildcard msg/*.msg) \
                $(wildcard interfaces/*/CMakeLists.txt interfaces/*/package.xml interfaces/*/msg/*.msg)
PYTEST_ARGS ?= -q
ROS_CLI ?= ../shared/ros-cli

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(SETUP_INPUTS) | $(VPY)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt -r requirements-build.txt
	bash scripts/ensure_build_tools.sh
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
	    BUILD_DIR=build/interfaces bash scripts/build_interfaces.sh interfaces
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	if [ -f $(ROS_CLI)/install.sh ]; then bash $(ROS_CLI)/install.sh $(VENV) build/ros-cli; \
	else echo "no $(ROS_CLI): ros2 launch / run / pkg not installed (tests that need them skip)"; fi
	touch $@

demo: setup
	$(VENV)/bin/g2s demo

test: setup
	$(VPY) -m pytest $(PYTEST_ARGS) test

bench: setup
	$(VPY) benchmarks/tile_crop.py

clean:
	rm -rf build $(VENV) *.egg-info
