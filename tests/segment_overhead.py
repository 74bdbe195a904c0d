"""What working in resumable segments costs (not part of the unit suite): one long clip
upscaled with the default segments and in one piece, alternately, timed end to end; prints
the times, the segment count and the overhead, and the most disk space each run's output
folder held at once (temporary files and output). A baseline script (the single-pass
upscale.py of an earlier commit) can be timed beside them.

    UPSCALE_MODEL_DIR=../shared/models python tests/segment_overhead.py \\
        [--minutes 10] [--size 640x360] [--scale 2] [--rounds 1] [--baseline OLD.py]
"""
import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SCRIPT, cli_env, make_clip  # noqa: E402

import upscale  # noqa: E402


def folder_bytes(folder):
    """Bytes of the files under folder, each file once (a hard link is not another copy)."""
    sizes = {}
    for path in Path(folder).rglob("*"):
        try:
            st = path.stat()
        except OSError:              # removed meanwhile
            continue
        if path.is_file():
            sizes[st.st_ino] = st.st_size
    return sum(sizes.values())


def timed_run(script, src, folder, *options):
    """(seconds one run took end to end, the most bytes its output folder held at once,
    the output's bytes). The folder is new and holds nothing but this run's files."""
    folder.mkdir()
    out = folder / "out.mp4"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), str(src), "-o", str(out), "-q",
                             *options], env=cli_env(), stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, folder_bytes(folder))
        time.sleep(0.2)
    took = time.monotonic() - started
    if proc.returncode:
        sys.exit(f"{script} failed: {proc.stderr.read().strip()}")
    size = out.stat().st_size
    shutil.rmtree(folder)
    return took, max(peak, size), size


def measure(minutes, size, scale, rounds, baseline):
    """{label: [seconds of each round]} and the default plan's segment count."""
    ffmpeg = upscale.find_ffmpeg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = make_clip(ffmpeg, tmp / "long.mp4", size=size, rate="24000/1001",
                        seconds=minutes * 60, vfilter="noise=alls=8:allf=t")
        w, h = map(int, size.split("x"))
        video = upscale.SourceVideo(w, h, 24000 / 1001, 0)
        settings = upscale.Settings(upscale.METHODS["fsrcnn"], upscale.SizeRequest("scale", scale),
                                    upscale.CODECS["h264"])
        plan = upscale.plan_frames(settings.size, settings.method, w, h)
        length = upscale.segment_length(settings, video, plan)
        count = len(upscale.plan_segments(0.0, minutes * 60, length))
        runs = {"segments": ("--scale", str(scale)),
                "one piece": ("--scale", str(scale), "--segment", "3600")}
        if baseline:
            runs = {"baseline": ("--scale", str(scale)), **runs}
        times = {label: [] for label in runs}
        space = {}
        for n in range(rounds):
            for label, options in runs.items():
                script = baseline if label == "baseline" else SCRIPT
                took, peak, size = timed_run(script, src, tmp / f"run{n}-{len(times[label])}"
                                             f"-{label.replace(' ', '-')}", *options)
                times[label].append(took)
                space[label] = (peak, size)
    return times, space, count, length


def report(times, space, count, length, minutes, size, scale):
    print(f"{minutes:g} min of {size} at 23.976 fps, fsrcnn x{scale}: {count} segments of "
          f"{length:g} s by default")
    for label, values in times.items():
        print(f"  {label:10s} " + ", ".join(f"{v:.1f} s" for v in values))
    best = {label: min(values) for label, values in times.items()}
    for reference in ("one piece", "baseline"):
        if reference in best:
            change = 100 * (best["segments"] / best[reference] - 1)
            print(f"  segments vs {reference}: {change:+.1f}% (best of each)")
    for label, (peak, out) in space.items():
        print(f"  {label:10s} output {out / 1e6:.0f} MB; the most its folder held at once: "
              f"{peak / 1e6:.0f} MB ({peak / out:.2f}x the output)")
    # (the largest of any run: the kernel keeps one maximum for all finished children)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"  peak memory of the largest run: {rss_mb:.0f} MB")
    print(json.dumps({"times": times, "space": space, "segments": count, "segment_s": length,
                      "peak_rss_mb": rss_mb}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="another upscale.py to time beside")
    args = parser.parse_args()
    times, space, count, length = measure(args.minutes, args.size, args.scale, args.rounds,
                                          args.baseline)
    report(times, space, count, length, args.minutes, args.size, args.scale)


if __name__ == "__main__":
    main()
