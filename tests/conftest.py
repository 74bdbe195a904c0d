"""Shared fixtures: real ffmpeg, real model files, real clips made by ffmpeg for each test.

Nothing here is mocked. A missing ffmpeg or model file fails the tests that need it.
"""
import os
import subprocess
import time
import sys
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "upscale.py"
sys.path.insert(0, str(ROOT))

import upscale  # noqa: E402

SHARED_MODELS = ROOT.parent / "shared" / "models"
MODEL_DIR = Path(os.environ.get("UPSCALE_MODEL_DIR") or SHARED_MODELS).resolve()
# What OpenCV 5.1 cannot do (README, "OpenCV 5.1"): read TensorFlow graphs as they are, so
# no LapSRN, EDSR or DnnSuperResImpl on our files. Tests of those (and those that use LapSRN
# as a slow model) run on the OpenCV that requirements.txt installs, the CI's.
needs_tensorflow = pytest.mark.skipif(
    not upscale.reads_tensorflow(), reason=f"OpenCV {upscale.cv2.__version__} reads no "
    "TensorFlow graphs: no LapSRN, EDSR or DnnSuperResImpl on these files")

# Tests never reach the internet: a download goes to a port where nothing listens.
NO_NETWORK_URL = "http://127.0.0.1:9/models"


@pytest.fixture(scope="session")
def ffmpeg():
    return upscale.find_ffmpeg()        # raises (fails) when there is none


@pytest.fixture(scope="session")
def model_dir():
    if not MODEL_DIR.is_dir():
        pytest.fail(f"model folder {MODEL_DIR} missing; set UPSCALE_MODEL_DIR")
    return MODEL_DIR


def model_file(name, scale):
    """The verified model file a method uses at a scale: the shipped one, or the official
    one from the model folder (a missing one fails)."""
    return upscale.locate_model(upscale.METHODS[name], scale, MODEL_DIR)


def cli_env(**extra):
    env = dict(os.environ)
    env["UPSCALE_MODEL_DIR"] = str(MODEL_DIR)       # absolute: tests run in other folders
    env["UPSCALE_MODEL_URL"] = NO_NETWORK_URL
    env.update({k: v for k, v in extra.items() if v is not None})
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
    return env


def run_cli(*args, env=None, cwd=None, timeout=300):
    """Run upscale.py as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, env=env or cli_env(), cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def recording_ffmpeg(ffmpeg, folder):
    """A real ffmpeg behind a script that notes each call in folder/calls."""
    wrapper = folder / "ffmpeg"
    folder.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{folder / "calls"}"\nexec "{ffmpeg}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def make_clip(ffmpeg, path, size="64x48", rate="25", seconds=1.0, audio=True,
              vcodec=("-c:v", "libx264", "-pix_fmt", "yuv420p"), acodec=("-c:a", "aac"),
              vfilter=None, extra=()):
    """Make a real test clip with ffmpeg: a moving test pattern and a sine tone."""
    path = Path(path)
    args = [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
            f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += ["-map", "0:v"] + (["-map", "1:a"] if audio else [])
    if vfilter:
        args += ["-vf", vfilter]
    args += list(vcodec) + (list(acodec) if audio else []) + list(extra) + [str(path)]
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL)
    return path


def probe(ffmpeg, path):
    return upscale.probe(ffmpeg, path)


def packet_times(ffmpeg, path, stream="v:0"):
    """Presentation times (seconds, exact Fractions) of a stream's packets, in order."""
    out = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", f"0:{stream}",
                          "-c", "copy", "-f", "framecrc", "-"],
                         capture_output=True, text=True, check=True).stdout
    tb = None
    times = []
    for line in out.splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            tb = Fraction(int(num), int(den))
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            times.append(int(fields[2]) * tb)
    return sorted(times)


def decoded_frame_count(ffmpeg, path):
    """Frames ffmpeg decodes from the first video stream."""
    out = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0",
                          "-f", "framemd5", "-"], capture_output=True, text=True,
                         check=True).stdout
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))


def video_size(path):
    import cv2
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok, f"cannot read {path}"
    return frame.shape[1], frame.shape[0]


def leftovers(folder):
    """Temporary files of upscale.py left in a folder (they all start with a dot)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def work_folders(folder):
    """The hidden folders of finished segments that runs keep for a rerun."""
    return sorted(p for p in Path(folder).iterdir() if p.name.endswith(".upscale-work"))


def segment_being_written(folder, name=""):
    """Whether a run on folder/name* is writing a segment's frames now."""
    return any(p.stat().st_size > 0 for work in work_folders(folder)
               if work.name.startswith(f".{name}") for p in work.glob(".seg-*"))


def wait_until_writing(proc, folder, name="", seconds=60):
    """Wait until proc has frames in its first segment; fail if it ended first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not segment_being_written(folder, name):
        assert proc.poll() is None, "finished before it could be interrupted"
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
