# The two commands that matter: `make demo` and `make test`. Everything installs itself.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/$(VENV):$(PATH)

.PHONY: demo test venv env-up env-down seed lint sanity unit integration molecule build bench clean

demo: ## bring up the local environment, seed IoT data, run the backup playbook, summarise
	tests/rig/demo.sh

test: ## install what the tests need and run the whole suite (lint, sanity, unit, integration, molecule, build)
	tests/run-all.sh

venv:
	tests/rig/venv.sh

env-up: venv ## start the TimescaleDB container and Azurite; writes .local/env.sh
	tests/rig/env-up.sh

env-down: ## stop what env-up started
	tests/rig/env-down.sh

seed: env-up ## seed the demo database (DEVICES=10 DAYS=30 INTERVAL=60)
	. .local/env.sh && $(VENV)/python tests/rig/seed_iot.py --dbname iot \
	  --devices $${DEVICES:-10} --days $${DAYS:-30} --interval $${INTERVAL:-60}

lint sanity unit integration molecule build: venv
	STAGES="setup $@" KEEP_ENV=1 tests/run-all.sh

bench: env-up ## benchmarks (ratios against a baseline in the same run); BENCH_ARGS="--scale 0.5,1,2" adds growth, "--fleet 4" 4 hosts against 1
	. .local/env.sh && $(VENV)/python bench/run.py $(BENCH_ARGS)

clean: env-down
	rm -rf .local/build .local/sanity
