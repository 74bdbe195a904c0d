"""Size, fidelity, encoding time and memory of each output codec (not part of the unit suite):
the README's "Default codec" table. videos/sample.mp4 is upscaled x4 by fsrcnn once (or, with
--pan, a 640x360 clip panning over a photo, as small video is made, x2 by fast), into
lossless FFV1; that picture is then encoded by each codec's encoder as upscale.py runs it
(Codec.encoder_args, at the codec's default CRF and the default preset unless given), one
encoder at a time, each on its own; prints the output's size, its PSNR against the lossless
frames (ffmpeg's psnr filter, luma and chroma), the encoder's CPU seconds (including decoding
the lossless input) and its peak memory. --no-b-frames also encodes each x264 and x265 row
without B-frames (as upscale.py did before they were kept), for a side-by-side comparison.

    python tests/codec_table.py [--codecs h264 av1 ...] [--crfs h264=20 av1=30 ...]
        [--presets superfast medium] [--pan PHOTO] [--no-b-frames]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, SCRIPT, cli_env  # noqa: E402

import upscale  # noqa: E402

PSNR_RE = re.compile(r"PSNR .* average:([0-9.]+|inf)")


def pan_clip(ffmpeg, photo, folder):
    """Four seconds of 640x360 at 25 fps panning over photo (enlarged 3x, a 1280x720 window
    moving 60 pixels a second), made small by ffmpeg's scaler and libx264 at CRF 18."""
    out = Path(folder) / "pan.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-loop", "1", "-i", str(photo), "-vf",
                    "scale=iw*3:ih*3:flags=lanczos,crop=1280:720:x='min(t*60,iw-1280)':"
                    "y='min(t*60,ih-720)',scale=640:360,format=yuv420p", "-t", "4", "-r", "25",
                    "-c:v", "libx264", "-crf", "18", str(out)], check=True)
    return out


def lossless_upscale(source, model, scale, folder):
    """source upscaled into lossless FFV1 (the frames every codec encodes)."""
    out = Path(folder) / "lossless.mkv"
    subprocess.run([sys.executable, str(SCRIPT), str(source), "-o", str(out), "-q",
                    "--model", model, "--scale", str(scale), "--codec", "ffv1"],
                   env=cli_env(), check=True)
    return out


def child_usage(command):
    """(CPU seconds, peak resident MB) of one run of command, which must succeed."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{command[0]} failed: {err.decode(errors='replace').strip()[-300:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


REORDERING_ENCODERS = ("h264", "h265")     # B-frames by default; "-bf 0" turns them off


def measure(ffmpeg, lossless, codec, crf, preset, folder, b_frames=True):
    """A dict of one encode's figures."""
    out = Path(folder) / f"{codec.name}.mkv"
    no_b = () if b_frames else ("-bf", "0")
    cpu, peak = child_usage([ffmpeg, "-v", "error", "-y", "-i", str(lossless), "-map", "0:v",
                             *codec.encoder_args(crf, preset), *no_b, str(out)])
    report = subprocess.run([ffmpeg, "-hide_banner", "-i", str(out), "-i", str(lossless),
                             "-lavfi", "[1:v]format=yuv420p[ref];[0:v][ref]psnr", "-f",
                             "null", "-"], capture_output=True, text=True).stderr
    return {"codec": codec.name, "crf": crf, "preset": preset, "b_frames": b_frames,
            "bytes": out.stat().st_size,
            "psnr": float(PSNR_RE.search(report).group(1)), "cpu": cpu, "peak_mb": peak}


def print_table(rows, what, out=sys.stdout):
    print(f"{what}, encoded from lossless frames", file=out)
    print("| encoder | size | PSNR dB | CPU s | peak memory |", file=out)
    print("|---|---|---|---|---|", file=out)
    for r in rows:
        label = "" if r["b_frames"] else ", no B-frames"
        print(f"| {upscale.CODECS[r['codec']].encoder} {r['preset']} CRF {r['crf']}{label} | "
              f"{r['bytes'] / 1e6:.2f} MB | {r['psnr']:.2f} | {r['cpu']:.2f} | "
              f"{r['peak_mb']:.0f} MB |", file=out)


def main():
    piped = [name for name, c in upscale.CODECS.items() if c.piped]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", nargs="+", default=piped, choices=piped)
    parser.add_argument("--crfs", nargs="*", default=[], metavar="CODEC=CRF",
                        help="other CRFs to try besides each codec's default")
    parser.add_argument("--presets", nargs="+", default=[upscale.DEFAULT_PRESET],
                        choices=upscale.X264_PRESETS)
    parser.add_argument("--pan", type=Path, metavar="PHOTO",
                        help="encode a pan over this photo, upscaled x2 by fast, instead of "
                             "the sample")
    parser.add_argument("--no-b-frames", action="store_true",
                        help="also encode each x264 and x265 row without B-frames")
    args = parser.parse_args()
    extra = {}
    for item in args.crfs:
        name, crf = item.split("=")
        extra.setdefault(name, []).append(int(crf))
    ffmpeg = upscale.find_ffmpeg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.pan:
            source, model, scale = pan_clip(ffmpeg, args.pan, tmp), "fast", 2
        else:
            source, model, scale = ROOT / "videos" / "sample.mp4", "fsrcnn", 4
        lossless = lossless_upscale(source, model, scale, tmp)
        video = upscale.probe(ffmpeg, lossless).video[0]
        what = f"{source.name} upscaled x{scale} by {model} to {video.width}x{video.height}"
        rows = [measure(ffmpeg, lossless, upscale.CODECS[name], crf, preset, tmp, b_frames)
                for name in args.codecs
                for b_frames in ([True, False] if args.no_b_frames and
                                 name in REORDERING_ENCODERS else [True])
                for crf in [upscale.CODECS[name].crf] + extra.get(name, [])
                for preset in args.presets]
    print_table(rows, what)


if __name__ == "__main__":
    main()
