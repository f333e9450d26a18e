"""`make bench`: every performance figure against its target, measured in one run on one machine.

Rows come from the bench_*.py modules beside this file (each also runs alone and prints its own table):
  bench_prediction.py  goal prediction: embedded default on CPU at 10/20/50 steps; SD-1.5 fp16 on GPU
  bench_progress.py    progress scoring frames/s at 640x480 on one core, and the pixel-MSE baseline's, as a ratio
  bench_node.py        node end to end over real rclpy: 30 Hz camera -> progress latency p50/p95 while a goal is
                       being predicted, dropped frames; peak resident (and GPU) memory of the node
  bench_training.py    training step time of the default model's architecture by objective (no target)
  bench_full_size.py   SD-1.5 InstructPix2Pix, architecture-identical random weights, on this CPU: prediction at
                       256/512 px x 10/20 steps, caches, one training step (each in its own process; builds a 4.3 GB
                       model in the cache once; about an hour on 2 cores; --skip bench_full_size leaves it out)
Run it on an otherwise idle machine: the figures are wall-clock times.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from table import Row, print_table  # noqa: E402

MODULES = ("bench_prediction", "bench_progress", "bench_node", "bench_training", "bench_full_size")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=MODULES, action="append", help="run only these modules (repeatable)")
    parser.add_argument("--skip", choices=MODULES, action="append", default=[], help="leave these modules out "
                                                                                     "(repeatable)")
    parser.add_argument("--output", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    started = time.time()
    for name in [name for name in args.only or MODULES if name not in args.skip]:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            rows += importlib.import_module(name).rows()
        except Exception as err:  # a failing module is a row, not a crash: the other figures still count
            traceback.print_exc()
            rows.append(Row(name, "not run", "", None, f"{type(err).__name__}: {err}"))
    text = print_table(rows, f"actedit_ros benchmark ({time.time() - started:.0f} s)")
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
