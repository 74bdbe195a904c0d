"""What working in resumable segments costs (not part of the unit suite): one long clip
upscaled with the default segments and in one piece, alternately, timed end to end; prints
the times, the segment count and the overhead. A baseline script (the single-pass
upscale.py of an earlier commit) can be timed beside them.

    UPSCALE_MODEL_DIR=../shared/models python tests/segment_overhead.py \\
        [--minutes 10] [--size 640x360] [--scale 2] [--rounds 1] [--baseline OLD.py]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SCRIPT, cli_env, make_clip  # noqa: E402

import upscale  # noqa: E402


def timed_run(script, src, out, *options):
    """Seconds one run took end to end, and its stderr."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(script), str(src), "-o", str(out), "-q",
                             "--overwrite", *options], env=cli_env(), capture_output=True,
                            text=True)
    took = time.monotonic() - started
    if result.returncode:
        sys.exit(f"{script} failed: {result.stderr.strip()}")
    return took


def measure(minutes, size, scale, rounds, baseline):
    """{label: [seconds of each round]} and the default plan's segment count."""
    ffmpeg = upscale.find_ffmpeg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = make_clip(ffmpeg, tmp / "long.mp4", size=size, rate="24000/1001",
                        seconds=minutes * 60, vfilter="noise=alls=8:allf=t")
        w, h = map(int, size.split("x"))
        video = upscale.SourceVideo(w, h, 24000 / 1001, 0)
        settings = upscale.Settings(upscale.METHODS["fsrcnn"], scale, upscale.CODECS["h264"])
        length = upscale.segment_length(settings, video)
        count = len(upscale.plan_segments(0.0, minutes * 60, length))
        runs = {"segments": ("--scale", str(scale)),
                "one piece": ("--scale", str(scale), "--segment", "3600")}
        times = {label: [] for label in runs}
        if baseline:
            times["baseline"] = []
        for _ in range(rounds):
            if baseline:
                times["baseline"].append(timed_run(baseline, src, tmp / "base.mp4",
                                                   "--scale", str(scale)))
            for label, options in runs.items():
                times[label].append(timed_run(SCRIPT, src, tmp / "out.mp4", *options))
    return times, count, length


def report(times, count, length, minutes, size, scale):
    print(f"{minutes:g} min of {size} at 23.976 fps, fsrcnn x{scale}: {count} segments of "
          f"{length:g} s by default")
    for label, values in times.items():
        print(f"  {label:10s} " + ", ".join(f"{v:.1f} s" for v in values))
    best = {label: min(values) for label, values in times.items()}
    for reference in ("one piece", "baseline"):
        if reference in best:
            change = 100 * (best["segments"] / best[reference] - 1)
            print(f"  segments vs {reference}: {change:+.1f}% (best of each)")
    print(json.dumps({"times": times, "segments": count, "segment_s": length}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="another upscale.py to time beside")
    args = parser.parse_args()
    times, count, length = measure(args.minutes, args.size, args.scale, args.rounds,
                                   args.baseline)
    report(times, count, length, args.minutes, args.size, args.scale)


if __name__ == "__main__":
    main()
