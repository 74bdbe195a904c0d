"""Whole-run speed of each model (not part of the unit suite): the README's "Which model?"
figures. For each source size, a clip of noisy test pictures is upscaled x2 by every model in
turn, end to end (start-up, model loading, decode, upscale, encode, mux), the models
alternated round by round so that drift in the machine's load hits them alike; prints frames
per second (the best round of each), and the ratios of fast's and hq's times to fsrcnn's on
every case (issue 17 names videos/sample.mp4 x4 and 640x360 x2). With --pythons, each
model runs under each of those interpreters in turn (say one with OpenCV 5.0 and one with
5.1, which runs the networks as ONNX models), a row for each.

    UPSCALE_MODEL_DIR=../shared/models python tests/model_speeds.py \\
        [--sizes 640x360 1280x720 1920x1080] [--models fast fsrcnn ...] [--rounds 2] \\
        [--pythons .venv/bin/python /tmp/v51/bin/python]
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, SCRIPT, cli_env, make_clip  # noqa: E402

import upscale  # noqa: E402

MODELS = ("fast", "hq", "fsrcnn", "fsrcnn-small", "espcn", "cubic")
SIZES = ("640x360", "1280x720", "1920x1080")
# Frames a clip has: about ten seconds of work for the light networks at each size.
FRAMES = {"640x360": 150, "1280x720": 60, "1920x1080": 30}


def run_seconds(src, out, model, scale, python=sys.executable):
    """Seconds one whole run of upscale.py takes."""
    started = time.monotonic()
    result = subprocess.run([python, str(SCRIPT), str(src), "-o", str(out), "-y",
                             "-q", "--model", model, "--scale", str(scale)], env=cli_env(),
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{model} failed: {result.stderr.strip()}")
    return time.monotonic() - started


def measure(cases, models, rounds, pythons=None):
    """{(case label, row): [seconds of each round]}; cases are (label, source path, scale),
    pythons {row suffix: interpreter} (None: this one), rows are model names and suffixes."""
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for label, src, scale in cases:
                for model in models:
                    for suffix, python in (pythons or {"": sys.executable}).items():
                        took = run_seconds(src, Path(tmp) / "out.mp4", model, scale, python)
                        times.setdefault((label, model + suffix), []).append(took)
    return times


def opencv_rows(pythons):
    """{" (OpenCV version)": interpreter} for each interpreter."""
    return {" (OpenCV {})".format(subprocess.run(
        [python, "-c", "import cv2; print(cv2.__version__)"], capture_output=True,
        text=True, check=True).stdout.strip()): python for python in pythons}


def sources(folder, sizes):
    """[(label, path, scale)]: a noisy test clip per size at x2, and the sample at x4."""
    ffmpeg = upscale.find_ffmpeg()
    cases = []
    for size in sizes:
        frames = FRAMES.get(size, 60)
        src = make_clip(ffmpeg, Path(folder) / f"{size}.mp4", size=size, rate="25",
                        seconds=frames / 25, vfilter="noise=alls=8:allf=t")
        cases.append((f"{size} x2", src, 2))
    cases.append(("sample.mp4 x4", ROOT / "videos" / "sample.mp4", 4))
    return cases


def frame_count(path):
    cap = upscale.open_capture(path)
    count = int(cap.get(upscale.cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return count


def report(times, counts, models, suffixes=("",), out=sys.stdout):
    labels = list(dict.fromkeys(label for label, _ in times))
    width = 14 + max(map(len, suffixes))
    print("frames per second, whole runs, best of the rounds", file=out)
    print(f"{'model':<{width}}" + "".join(f"{label:>16}" for label in labels), file=out)
    for model in models:
        for suffix in suffixes:
            cells = [counts[label] / min(times[label, model + suffix]) for label in labels]
            print(f"{model + suffix:<{width}}" + "".join(f"{c:>16.1f}" for c in cells),
                  file=out)
    for suffix in suffixes:
        for tier in ("fast", "hq"):   # issue 17: fast within 15% of fsrcnn, hq within 10x
            if tier in models and "fsrcnn" in models:
                for label in labels:
                    ratio = min(times[label, tier + suffix]) / min(times[label,
                                                                         "fsrcnn" + suffix])
                    print(f"{tier}'s time / fsrcnn's{suffix}, {label}: {ratio:.2f}", file=out)
    for later in suffixes[1:]:
        for model in models:
            for label in labels:
                ratio = min(times[label, model + later]) / min(times[label, model + suffixes[0]])
                print(f"{model}: time{later} / time{suffixes[0]}, {label}: {ratio:.2f}",
                      file=out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pythons", nargs="+", metavar="PYTHON",
                        help="interpreters to run upscale.py under, in turn (default: this)")
    args = parser.parse_args()
    pythons = opencv_rows(args.pythons) if args.pythons else {"": sys.executable}
    with tempfile.TemporaryDirectory() as folder:
        cases = sources(folder, args.sizes)
        counts = {label: frame_count(src) for label, src, _ in cases}
        times = measure(cases, args.models, args.rounds, pythons)
    report(times, counts, args.models, tuple(pythons))


if __name__ == "__main__":
    main()
