"""Soak check (not part of the unit suite): a folder of 50 short clips, some broken, run
with a random SIGINT in the middle, then run again; every good clip must end with exactly
one complete output and nothing else may be left.

    UPSCALE_MODEL_DIR=../shared/models python tests/soak.py [--seed N]
"""
import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SCRIPT, cli_env, decoded_frame_count, make_clip  # noqa: E402

import upscale  # noqa: E402


def make_folder(ffmpeg, folder, rng):
    good, bad = [], []
    for i in range(50):
        path = folder / f"clip{i:02d}.mp4"
        kind = rng.choice(["good"] * 8 + ["empty", "text"])
        if kind == "empty":
            path.write_bytes(b"")
            bad.append(path)
        elif kind == "text":
            path.write_text("not a video\n")
            bad.append(path)
        else:
            make_clip(ffmpeg, path, size="48x32", seconds=rng.choice([0.4, 0.8, 1.2]))
            good.append(path)
    return good, bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=int(time.time()))
    seed = parser.parse_args().seed
    rng = random.Random(seed)
    ffmpeg = upscale.find_ffmpeg()
    with tempfile.TemporaryDirectory(prefix="upscale-soak-") as tmp:
        folder, out = Path(tmp) / "in", Path(tmp) / "out"
        folder.mkdir()
        good, bad = make_folder(ffmpeg, folder, rng)
        command = [sys.executable, str(SCRIPT), str(folder), "--scale", "2", "--output-dir",
                   str(out), "--quiet"]
        first = subprocess.Popen(command, env=cli_env(), stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, 1.5))     # the whole first run takes a few seconds
        first.send_signal(signal.SIGINT)
        _, err1 = first.communicate(timeout=300)
        done_first = len(list(out.glob("*.mp4"))) if out.exists() else 0
        second = subprocess.run(command, env=cli_env(), capture_output=True, text=True,
                                timeout=600)
        outputs = sorted(p.name for p in out.iterdir())
        expected = sorted(f"{p.stem}_fast_x2.mp4" for p in good)
        problems = []
        if outputs != expected:
            problems.append(f"outputs differ: extra {sorted(set(outputs) - set(expected))}, "
                            f"missing {sorted(set(expected) - set(outputs))}")
        for p in good:
            o = out / f"{p.stem}_fast_x2.mp4"
            if o.exists() and decoded_frame_count(ffmpeg, o) != decoded_frame_count(ffmpeg, p):
                problems.append(f"{o.name}: frame count differs from its source")
        hidden = [p.name for d in (folder, out) for p in d.iterdir() if p.name.startswith(".")]
        if hidden:
            problems.append(f"left behind: {hidden}")
        if second.returncode != (1 if bad else 0):
            problems.append(f"second run exit {second.returncode}")
        print(f"seed {seed}: {len(good)} good, {len(bad)} broken clips; first run interrupted "
              f"(exit {first.returncode}) after {done_first} outputs; second run exit "
              f"{second.returncode}, {len(outputs)} outputs")
        for problem in problems:
            print("PROBLEM:", problem)
        print("soak: OK" if not problems else "soak: FAILED")
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
