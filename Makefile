# The two commands a user needs (README): `make demo` and `make test`. Both set everything up on first use.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup demo test bench train-default train-progress eval clean
setup:
	@bash scripts/setup.sh

demo: setup  ## the node on the embedded default model, fed by a replayed episode; writes a run folder
	@$(ENV) python -m actedit_ros.demo $(ARGS)

test: setup  ## the whole test suite (what CI runs)
	@$(ENV) python -m pytest test $(ARGS)

bench: setup  ## one table: every performance figure against its target
	@$(ENV) python bench/run.py $(ARGS)

train-default: setup  ## reproduce the embedded default model (hours on CPU; resumes from its last checkpoint)
	@$(ENV) nice -n 10 python -m actedit_ros.world.train_default $(ARGS)

train-progress: setup  ## retrain the learned progress model by the shipped one's recipe (world frames + the default editor's plain goals; resumes)
	@$(ENV) nice -n 10 python -m actedit_ros.world.dataset --out work_dirs/progress/world160 --train 1630 --test 0 \
		--size 160 120 --frames 12 --negatives
	@$(ENV) nice -n 10 python -m actedit_ros.progress.train_progress --data work_dirs/progress/world160 \
		--work-dir work_dirs/progress/run --goal-mode plain --export actedit_ros/models/progress/progress_model.safetensors $(ARGS)

eval: setup  ## evaluation table of the embedded default on held-out synthetic episodes
	@$(ENV) python -m actedit_ros.world.evaluate $(ARGS)

clean:
	rm -rf build install log
