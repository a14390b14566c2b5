# checkpointd: the two set-up commands are `make demo` and `make test`; everything else is here too.
SHELL := /bin/bash
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

DEB_PACKAGES := cmake ninja-build g++ make pkg-config git openssl \
  libboost-dev libboost-system-dev libssl-dev libsqlite3-dev sqlite3 \
  libpaho-mqtt-dev libpaho-mqttpp-dev mosquitto mosquitto-clients \
  libyaml-cpp-dev libyaml-dev nlohmann-json3-dev libcli11-dev libsystemd-dev libpugixml-dev \
  libturbojpeg0-dev libjpeg62-turbo-dev libgtest-dev libgmock-dev libbenchmark-dev libpq-dev postgresql \
  libcairo2-dev libpango1.0-dev libqrencode-dev fonts-wqy-zenhei poppler-utils zbar-tools \
  clang-14 clang-format-14 libclang-rt-14-dev systemd dpkg-dev

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test unit integration demo bench sanitize fuzz clean format format-check faults package

all: build

# Installs only what is missing; a no-op when everything is there.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing" $$missing; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi

# A new build directory uses Ninja: on 2 cores a clean build takes 622 s against about 740 s with Makefiles,
# since Ninja compiles a component's files while the libraries it links are still being built. A directory
# made before keeps the generator it was made with (CMake cannot change it in place).
generator = $(if $(wildcard $(1)/CMakeCache.txt),,-G Ninja)

build: deps
	cmake -S . -B $(BUILD_DIR) $(call generator,$(BUILD_DIR)) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Tests run one more at a time than there are cores: the integration tests spend most of their time waiting
# on real processes (daemon, simulators, broker, PostgreSQL), so a third test fills the cores they leave
# idle. The soak tests (floods, kill cycles: RSS and rate figures) keep the machine to themselves (RUN_SERIAL),
# and so do the integration tests under ASan+UBSan (tests/integration/CMakeLists.txt says why).
TEST_JOBS ?= $(shell echo $$(( $$(nproc) + 1 )))
CTEST_ARGS ?=
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(TEST_JOBS) --timeout 600 $(CTEST_ARGS)

unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

integration: build
	cd $(BUILD_DIR) && ctest --output-on-failure -L integration

# Long form of the crash-consistency harness (tests/faults): FAULT_KILLS SIGKILLs under load (docs/faults.md).
FAULT_KILLS ?= 500
faults: build
	CPD_BUILD_DIR=$(abspath $(BUILD_DIR)) CPD_FAULT_KILLS=$(FAULT_KILLS) $(BUILD_DIR)/tests/cpd-it-tests --gtest_filter='CrashConsistency.*'

# The suite under ASan+UBSan in build-asan (CI runs it after `make test`): every unit test and fuzz replay
# and the integration tests labelled `sanitize` (tests/CMakeLists.txt says which and why), built alone
# (target cpd-sanitize-set). -Og -g1 keeps the build quick (about 60 % of the time of -O1 with the
# sanitizers) and the reports readable (file and line); tests skip memory bounds there (CPD_SANITIZED), so
# the soak tests (floods and kill cycles, whose point is those bounds) are left out.
SANITIZE_DIR ?= build-asan
sanitize: deps
	cmake -S . -B $(SANITIZE_DIR) $(call generator,$(SANITIZE_DIR)) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCPD_SANITIZE=ON -DCPD_BUILD_BENCH=OFF \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO='-Og -g1' $(CMAKE_FLAGS)
	cmake --build $(SANITIZE_DIR) --target cpd-sanitize-set -j $(JOBS)
	cd $(SANITIZE_DIR) && ctest --output-on-failure -j $(TEST_JOBS) --timeout 600 -L 'unit|sanitize' -LE soak

# libFuzzer targets under ASan+UBSan in their own clang build dir (docs/fuzzing.md): each runs for
# FUZZ_SECONDS from the generated seeds; a crash is kept in fuzz/crashes/<target>/ and fails the run.
FUZZ_BUILD_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD_DIR) $(call generator,$(FUZZ_BUILD_DIR)) \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCPD_FUZZ=ON -DCPD_BUILD_TESTS=OFF -DCPD_BUILD_BENCH=OFF
	cmake --build $(FUZZ_BUILD_DIR) --target cpd-fuzz -j $(JOBS)
	fuzz/run_fuzz.sh $(FUZZ_BUILD_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

demo: build
	tools/demo.sh $(BUILD_DIR)

bench: build
	cmake --build $(BUILD_DIR) --target cpd-benches -j $(JOBS)
	$(BUILD_DIR)/bench/cpd-bench && $(BUILD_DIR)/bench/cpd-camera-bench && $(BUILD_DIR)/bench/cpd-dock-bench && \
	  $(BUILD_DIR)/bench/cpd-outage-bench && $(BUILD_DIR)/bench/cpd-flood-bench && $(BUILD_DIR)/bench/cpd-central-bench && \
	  $(BUILD_DIR)/bench/cpd-custody-bench

# A Debian package (CPack) in $(BUILD_DIR): binaries in /usr/bin, the unit, /etc/checkpointd, a system user
# (cmake/Packaging.cmake, docs/install.md). dpkg-shlibdeps (dpkg-dev) fills in Depends.
package: build
	@command -v dpkg-shlibdeps >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q --no-install-recommends dpkg-dev
	cd $(BUILD_DIR) && cpack -G DEB
	@ls -1 $(BUILD_DIR)/checkpointd_*.deb

# .clang-format applies to every C++ file in the repository; CI fails on a file it would change.
CLANG_FORMAT ?= clang-format-14
format: deps
	git ls-files '*.cpp' '*.h' | xargs $(CLANG_FORMAT) -i

format-check: deps
	git ls-files '*.cpp' '*.h' | xargs $(CLANG_FORMAT) --dry-run --Werror

clean:
	rm -rf $(BUILD_DIR) build-asan
