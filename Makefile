# Understudy: the two commands are `make run` and `make test`; everything
# else is what they call.  Setup is automatic and idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HEAP   ?= 2M
SETUP  := $(VENV)/.setup-done
MPY    := build/mpy/.stamp
TLS    := build/tls/cert.der
SRC    := $(shell find lib firmware -name '*.py') boot.py main.py www/index.html

.PHONY: setup run test mpy tls clean help package deploy bench fuzz storm

help:
	@echo "make run    start the terminal on this PC (unix port), every personality listening"
	@echo "make run BOARD=pico PICO_UF2=... PICO_BOOTROM=...  on an emulated Pico (rp2040js), serial only"
	@echo "make test   run the whole test suite (what CI runs)"
	@echo "make mpy    compile the firmware to .mpy (build/mpy), as boards run it"
	@echo "make tls    the terminal's self-signed TLS certificate (build/tls, DER)"
	@echo "make package  rewrite package.json (what mip installs on a board)"
	@echo "make deploy PORT=/dev/ttyUSB0 [ARGS=\"--ssid NET --password PW\"]  flash a board (understudy deploy)"
	@echo "make bench  speed and memory against an echo floor, mixed-use fit rates (docs/BENCHMARKS.md, ~8 min)"
	@echo "make fuzz   the long fuzzing run of every codec, corpus kept and replayed under micropython (docs/ROBUSTNESS.md)"
	@echo "make storm  the journal under 300 rounds of kill -9 and concurrent traffic, files and littlefs (docs/JOURNAL.md)"
	@echo "make clean  remove build/ and state/ (keeps .venv)"

setup: $(SETUP)

$(SETUP): requirements.txt stubs.txt tools/setup_env.py
	@$(PYTHON) tools/setup_env.py

mpy: $(MPY)

$(MPY): $(SETUP) $(SRC) tools/understudy/build.py
	@$(BIN)/python tools/build.py

tls: $(TLS)

$(TLS): $(SETUP)
	@$(BIN)/python tools/understudy/tls.py

# BOARD=pico: on an emulated Raspberry Pi Pico (rp2040js) instead of the unix
# port; you give MicroPython's rp2 RPI_PICO UF2 and the RP2040 boot ROM
# (neither is in this repository): PICO_UF2=path PICO_BOOTROM=path
BOARD ?= unix
PICO  := $(VENV)/.pico-done

$(PICO): $(SETUP) requirements-pico.txt tools/pico/package-lock.json
	@$(BIN)/pip install --quiet -r requirements-pico.txt
	@npm ci --prefix tools/pico --no-audit --no-fund --silent
	@touch $@

run: $(MPY) $(TLS) $(if $(filter pico,$(BOARD)),$(PICO))
	@if [ "$(BOARD)" = pico ]; then \
		PYTHONPATH=tools $(BIN)/python -m understudy pico --uf2 "$(PICO_UF2)" --bootrom "$(PICO_BOOTROM)" $(ARGS); \
	else $(BIN)/python tools/run.py --heap $(HEAP) $(ARGS); fi

deploy: $(MPY) $(TLS)
	@test -n "$(PORT)" || { echo "make deploy needs PORT=/dev/ttyUSB0 (the board's serial port)"; exit 2; }
	@PYTHONPATH=tools $(BIN)/python -m understudy deploy --port $(PORT) $(ARGS)

test: $(MPY) $(TLS)
	@$(BIN)/python tools/setup_browser.py
	@$(BIN)/python -m pytest host_tests -n 2 $(PYTEST_ARGS)

BENCH := $(VENV)/.bench-done

$(BENCH): $(SETUP) requirements-bench.txt
	@$(BIN)/pip install --quiet -r requirements-bench.txt && touch $@

bench: $(MPY) $(TLS) $(BENCH)
	@PYTHONPATH=tools $(BIN)/python -m understudy bench $(ARGS)
	@PYTHONPATH=tools $(BIN)/python -m understudy.bench_fleet --chart docs/bench-fleet.png $(FLEET)

# the long fuzzing run (docs/ROBUSTNESS.md): new outcomes join host_tests/corpus,
# which is then replayed on CPython and under micropython; FUZZ_EXAMPLES per property
FUZZ_EXAMPLES ?= 20000

fuzz: $(SETUP)
	@UNDERSTUDY_FUZZ=long UNDERSTUDY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) UNDERSTUDY_FUZZ_RECORD=1 \
		$(BIN)/python -m pytest host_tests/test_fuzz_codecs.py -q -p no:cacheprovider --timeout=3600 \
		--durations=5 $(PYTEST_ARGS)
	@$(BIN)/python host_tests/fuzz_corpus.py
	@$(BIN)/python -m pytest host_tests/codec/test_corpus.py host_tests/test_codecs_micropython.py -q -p no:cacheprovider

clean:
	rm -rf build state .pytest_cache

package:
	@$(BIN)/python -c "import sys; sys.path.insert(0, 'tools'); from understudy.package import write; write()"

# the journal's long storm of power cuts (host_tests/test_journal_storm.py, docs/JOURNAL.md)
STORM_ROUNDS ?= 300

storm: $(MPY) $(TLS)
	@UNDERSTUDY_STORM_ROUNDS=$(STORM_ROUNDS) $(BIN)/python -m pytest host_tests/test_journal_storm.py -q -s \
		-p no:cacheprovider --timeout=3600 $(PYTEST_ARGS)
