#!/usr/bin/env python3
"""One training run in one call on a lent GPU machine, which has PyTorch but neither
TensorFlow nor the training images, and a fixed time: rebuild the data cache carried there
(carry.py), time a short trial of the step at each batch size, then run train.py with as
many steps as fit the time left, its run folder under $OUT so that it comes back. It prints
the train.py command it ran: that command, run again anywhere (the CPU too, given time),
makes the same run.

    # here, from models/ (the high-resolution part and one scale's fit one upload):
    python carry.py pack --cache CACHE --out ../.carry-hr --part hr
    python carry.py pack --cache CACHE --out ../.carry-x4 --part lr --scales 4
    # there, from the project root (carrying .carry-hr and .carry-x4):
    python models/device_train.py --family hq --scale 4 --seconds 540 \\
        --init-pb models/hq-upscalepy_x4.pb --lr 4e-4 --seed 7 --carried .carry-hr .carry-x4

The hq x3 and x4 files of the fourth phase (models/README.md) were made this way.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRIAL_STEPS = 1000


def train_command(args, run, steps, batch, *extra):
    return [sys.executable, str(HERE / "train.py"), "train", "--backend", "torch",
            "--family", args.family, "--scale", str(args.scale), "--run", str(run),
            "--init-pb", args.init_pb, "--steps", str(steps), "--lr", args.lr,
            "--seed", str(args.seed), "--batch", str(batch), "--threads", "1",
            "--cache", str(args.work / "cache"), "--degradation", args.degradation, *extra]


def trial_rate(args, batch, env):
    """Steps a second over the second half of a short trial (the first holds the start-up and
    the graph's capture), or None if the trial failed."""
    run = args.work / f"trial-b{batch}"
    command = train_command(args, run, 10 * TRIAL_STEPS, batch, "--stop-at", str(TRIAL_STEPS),
                            "--val-every", str(TRIAL_STEPS // 2), "--checkpoint-seconds", "1e9")
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return None
    found = [(int(n), float(r)) for n, r in
             re.findall(r"step (\d+)/\d+ .* ([\d.]+) steps/s", done.stdout)]
    if len(found) < 2:
        print(done.stdout[-1500:], done.stderr[-1500:], sep="\n", flush=True)
        return None
    (n1, r1), (n2, r2) = found[-2:]
    return (n2 - n1) / (n2 / r2 - n1 / r1)


def best_batch(rates):
    """The batch with the most patches a second, a larger one only if clearly (30%) ahead."""
    best = None
    for batch in sorted(b for b, r in rates.items() if r):
        if best is None or rates[batch] * batch > 1.3 * rates[best] * best:
            best = batch
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True)
    parser.add_argument("--scale", type=int, required=True)
    parser.add_argument("--init-pb", required=True, help="the file to go on training from")
    parser.add_argument("--seconds", type=float, required=True,
                        help="the whole call's time, this script's start to its end")
    parser.add_argument("--lr", default="4e-4")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--degradation", default="mix")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--carried", nargs="+", required=True,
                        help="the folders carry.py packed")
    parser.add_argument("--work", type=Path, default=Path("/tmp/device-train"))
    args = parser.parse_args()
    started = time.monotonic()
    out = Path(os.environ.get("OUT", args.work / "out"))
    env = dict(os.environ, UPSCALE_DATASETS="/nonexistent", PYTHONUNBUFFERED="1")

    subprocess.run([sys.executable, str(HERE / "carry.py"), "unpack", "--from", *args.carried,
                    "--cache", str(args.work / "cache"), "--scales", str(args.scale)],
                   check=True, env=env)
    rates = {batch: trial_rate(args, batch, env) for batch in args.batches}
    print(f"steps a second: {rates}", flush=True)
    batch = best_batch(rates)
    if batch is None:
        raise SystemExit("every trial failed (see above); try --batches 64, or train.py "
                         "--no-graph by hand")
    # What is left, less a minute for the run's start and its last validation, and 15% for
    # the steps to be slower than in the trial.
    left = args.seconds - (time.monotonic() - started) - 60
    steps = int(rates[batch] * left * 0.85) // 1000 * 1000
    command = train_command(args, out / f"{args.family}-x{args.scale}", steps, batch,
                            "--val-every", "5000", "--checkpoint-seconds", "60")
    print("running: " + " ".join(command), flush=True)
    sys.exit(subprocess.run(command, env=env).returncode)


if __name__ == "__main__":
    main()
