# Conveniences over the scripts; the README's two commands need none of this.
FUZZ_TARGET ?= scan
FUZZ_SECONDS ?= 300
BENCH_DIR ?= /tmp/pw-bench

.PHONY: test fuzz bench

test:  ## lint, type-check and the whole test suite (what CI runs)
	bash scripts/test.sh

fuzz:  ## coverage-guided fuzzing (pip install atheris): make fuzz FUZZ_TARGET=scan|layout|machine|zip FUZZ_SECONDS=300
	python fuzz/seeds.py
	python fuzz/run.py $(FUZZ_TARGET) fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -timeout=30 -rss_limit_mb=4096

bench:  ## the benchmark suite (needs torch to make its files; about 9 GB of disk)
	python benchmarks/make_files.py $(BENCH_DIR)
	python benchmarks/run.py $(BENCH_DIR) --repeat 3 --bytes
