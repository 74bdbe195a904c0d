"""Long videos: resumable segments, resume after any interruption, --part K/N.

Every run here is a real process on a real clip; interruptions are real signals (kill -9
included), sent while the run is at a known point of its work.
"""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import upscale
from conftest import (ROOT, SCRIPT, cli_env, make_clip, packet_times, run_cli, video_size,
                      wait_until_writing, work_folders)

SEGMENT_OPTIONS = ("--scale", "4", "--segment", "2")      # a 8 s clip: 4 segments


def decoded_frames(ffmpeg, path):
    """(time, md5) of every decoded frame of the first video stream, in order."""
    out = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0",
                          "-f", "framemd5", "-"], capture_output=True, text=True,
                         check=True).stdout
    return [(int(f[2]), f[5]) for f in (line.split(", ") for line in out.splitlines()
                                        if line and not line.startswith("#"))]


def same_output(ffmpeg, a, b):
    """Whether two outputs have the same decoded frames at the same times, and the same
    sound at the same times."""
    return decoded_frames(ffmpeg, a) == decoded_frames(ffmpeg, b) and \
        packet_times(ffmpeg, a, "a:0") == packet_times(ffmpeg, b, "a:0")


def finished_segments(folder):
    return sum(1 for w in work_folders(folder) for _ in w.glob("seg-*.json"))


def start(src, *options, env=None):
    return subprocess.Popen([sys.executable, str(SCRIPT), str(src), *options],
                            env=env or cli_env(), stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        assert proc.poll() is None, "finished before it could be interrupted"
        time.sleep(0.01)
    assert condition(), "the run never got there"


@pytest.fixture(scope="module")
def long_clip(ffmpeg, tmp_path_factory):
    """An 8 s clip with sound and B-frames, and the output of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("long")
    src = make_clip(ffmpeg, folder / "film.mp4", size="160x120", seconds=8,
                    vcodec=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "3", "-g", "30"))
    reference = folder / "reference.mp4"
    result = run_cli(src, *SEGMENT_OPTIONS, "-o", reference)
    assert result.returncode == 0, result.stderr
    return src, reference


def fresh_copy(src, folder):
    copy = folder / src.name
    shutil.copy2(src, copy)
    return copy


# --- segments join exactly --------------------------------------------------------------

def test_segments_join_without_a_lost_or_repeated_frame(ffmpeg, tmp_path):
    # Variable frame rate, B-frames and open GOPs: the lossless codec shows every pixel.
    src = make_clip(ffmpeg, tmp_path / "vfr.mkv", size="96x64", rate="30", seconds=6,
                    vfilter="settb=1/1000,setpts='N/30/TB+0.011*sin(N)/TB'",
                    vcodec=("-c:v", "libx264", "-bf", "3", "-g", "40", "-x264-params",
                            "open-gop=1", "-fps_mode", "passthrough"))
    pieces, whole = tmp_path / "pieces.mkv", tmp_path / "whole.mkv"
    for out, length in ((pieces, "0.7"), (whole, "3600")):
        result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", "ffv1",
                         "--segment", length, "-o", out)
        assert result.returncode == 0, result.stderr
    frames = decoded_frames(ffmpeg, pieces)
    assert frames == decoded_frames(ffmpeg, whole)
    times, source_times = packet_times(ffmpeg, pieces), packet_times(ffmpeg, src)
    assert len(times) == len(frames) == len(source_times)
    assert max(abs(a - b) for a, b in zip(times, source_times)) <= 0.001   # the last too
    assert packet_times(ffmpeg, pieces, "a:0") == packet_times(ffmpeg, whole, "a:0")


def test_a_late_segment_is_decoded_from_a_keyframe_near_it(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "film.mp4", size="64x48", seconds=60, audio=False,
                    vcodec=("-c:v", "libx264", "-g", "25"))
    stats = upscale.ReadStats()
    segment = upscale.Segment(25, 50000.0, 52000.0)
    times = [t for _, t in upscale.segment_frames(upscale.OpenCVReader(src), segment, stats)]
    assert times == pytest.approx([50000.0 + 40 * i for i in range(50)])
    # at most the seek margin (1 s) and a GOP before it, not 1250 frames
    assert stats.decoded <= 50 + 25 + 25 + 1, stats.decoded


# --- resume after an interruption -------------------------------------------------------

def kill_at_join(ffmpeg, folder):
    """An ffmpeg that stops for good when asked to join segments (for the test to kill the
    run there); anything else it does as the real one."""
    wrapper = folder / "bin" / "ffmpeg"
    wrapper.parent.mkdir()
    marker = folder / "joining"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *concat*) touch "{marker}"; exec sleep 60;; '
                       f'esac\nexec "{ffmpeg}" "$@"\n')
    wrapper.chmod(0o755)
    return cli_env(UPSCALE_FFMPEG=str(wrapper)), marker


@pytest.mark.parametrize("moment", ["first segment", "mid-run", "join"])
def test_kill_9_then_a_rerun_gives_the_uninterrupted_output_redoing_at_most_one_segment(
        ffmpeg, tmp_path, long_clip, moment):
    src = fresh_copy(long_clip[0], tmp_path)
    env, marker = kill_at_join(ffmpeg, tmp_path) if moment == "join" else (None, None)
    proc = start(src, *SEGMENT_OPTIONS, env=env)
    if moment == "first segment":
        wait_until_writing(proc, tmp_path)
    elif moment == "mid-run":
        wait_for(lambda: finished_segments(tmp_path) >= 2, proc)
    else:
        wait_for(marker.exists, proc)
    proc.kill()
    proc.wait()
    done = finished_segments(tmp_path)
    kept_frames = sum(json.loads(r.read_text())["frames"]
                      for w in work_folders(tmp_path) for r in w.glob("seg-*.json"))
    assert done < 4 or moment == "join"
    out = tmp_path / "film_fast_x4.mp4"
    assert not out.exists()
    result = run_cli(src, *SEGMENT_OPTIONS)
    assert result.returncode == 0, result.stderr
    # Every segment finished before the kill is used again: only the one in progress is redone.
    if done:
        assert f"resuming: {done} of 4 segments already done" in result.stderr
        assert f"{kept_frames} done by an earlier run" in result.stderr
    else:
        assert "resuming" not in result.stderr
    assert same_output(ffmpeg, out, long_clip[1])
    assert work_folders(tmp_path) == []


def test_an_interrupt_keeps_the_finished_segments_and_says_where(ffmpeg, tmp_path, long_clip):
    src = fresh_copy(long_clip[0], tmp_path)
    proc = start(src, *SEGMENT_OPTIONS)
    wait_for(lambda: finished_segments(tmp_path) >= 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    kept = work_folders(tmp_path)
    assert len(kept) == 1 and f"kept in {kept[0]}; run the same command again" in err
    assert "Traceback" not in err


def killed_mid_run(clip, folder):
    """A copy of clip in folder, whose run was killed (kill -9) after two segments."""
    src = fresh_copy(clip, folder)
    proc = start(src, *SEGMENT_OPTIONS)
    wait_for(lambda: finished_segments(folder) >= 2, proc)
    proc.kill()
    proc.wait()
    return src


def test_a_changed_source_never_reuses_old_segments(ffmpeg, tmp_path, long_clip):
    src = killed_mid_run(long_clip[0], tmp_path)
    other = make_clip(ffmpeg, tmp_path / "other.mp4", size="160x120", seconds=8,
                      vfilter="negate")
    os.replace(other, src)                        # same name, other pictures
    result = run_cli(src, *SEGMENT_OPTIONS)
    assert result.returncode == 0, result.stderr
    assert "the source changed since the interrupted run" in result.stderr
    assert "resuming" not in result.stderr
    fresh = run_cli(src, *SEGMENT_OPTIONS, "-o", tmp_path / "fresh.mp4")
    assert fresh.returncode == 0, fresh.stderr
    assert same_output(ffmpeg, tmp_path / "film_fast_x4.mp4", tmp_path / "fresh.mp4")


def test_changed_settings_never_reuse_old_segments(ffmpeg, tmp_path, long_clip):
    src = killed_mid_run(long_clip[0], tmp_path)
    result = run_cli(src, *SEGMENT_OPTIONS, "--crf", "30")
    assert result.returncode == 0, result.stderr
    assert "the settings changed (crf 18, asked 30) since the interrupted run" in result.stderr
    assert "resuming" not in result.stderr
    made = upscale.recorded_settings(ffmpeg, tmp_path / "film_fast_x4.mp4")
    assert "crf=30" in made


def test_segments_another_version_made_are_never_reused(ffmpeg, tmp_path, long_clip):
    # A version's segments may be coded differently (1's had no B-frames): joined to another
    # version's, they would share the first one's parameter sets and decode wrongly.
    src = fresh_copy(long_clip[0], tmp_path)
    result = run_cli(src, *SEGMENT_OPTIONS, "--part", "1/2")
    assert result.returncode == 0, result.stderr
    manifest = work_folders(tmp_path)[0] / "manifest.json"
    kept = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**kept, "version": upscale.WORK_VERSION - 1}))
    result = run_cli(src, *SEGMENT_OPTIONS)
    assert result.returncode == 0, result.stderr
    assert "another version of upscale.py made its segments since the interrupted run" \
        in result.stderr
    assert "resuming" not in result.stderr
    assert same_output(ffmpeg, tmp_path / "film_fast_x4.mp4", long_clip[1])


# --- one video over many processes: --part K/N -----------------------------------------

def test_parts_in_any_order_some_twice_at_once_then_a_plain_run_equal_a_single_run(
        ffmpeg, tmp_path, long_clip):
    src = fresh_copy(long_clip[0], tmp_path)
    order = [[3], [1, 1], [4], [2, 2]]             # two parts run twice at the same time
    random.Random(13).shuffle(order)
    for parts in order:
        procs = [start(src, *SEGMENT_OPTIONS, "--part", f"{k}/4") for k in parts]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert f"part {parts[0]}/4 done: " in err
    assert not (tmp_path / "film_fast_x4.mp4").exists()      # a part never joins
    result = run_cli(src, *SEGMENT_OPTIONS)
    assert result.returncode == 0, result.stderr
    assert "resuming: 4 of 4 segments already done" in result.stderr
    assert same_output(ffmpeg, tmp_path / "film_fast_x4.mp4", long_clip[1])


def test_more_parts_than_segments_leaves_some_parts_nothing_to_do(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "short.mp4", seconds=1)
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--part", "2/3")
    assert result.returncode == 0, result.stderr
    assert "part 2/3 done: " in result.stderr and "(0 frames" in result.stderr


@pytest.mark.parametrize("text", ["0/4", "5/4", "3", "a/b", "1/0"])
def test_a_part_that_is_not_k_of_n_is_a_usage_error(tmp_path, text):
    result = run_cli(tmp_path / "x.mp4", "--part", text)
    assert result.returncode == 2 and "K/N" in result.stderr


def readme_block(heading):
    """The shell lines of the README's code block under a heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return block


def run_recipe(script, folder, **env):
    """Run a README recipe with bash in folder, where film.mp4 and upscale.py are."""
    tool = folder / "upscale.py"
    if not tool.exists():
        tool.symlink_to(SCRIPT)
    # python3 is the one running the tests (a virtual environment's, say)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", "-euc", script], cwd=folder, env=cli_env(PATH=path, **env),
                          capture_output=True, text=True, timeout=300)


def test_the_readmes_gnu_parallel_recipe_works_as_written(ffmpeg, tmp_path, long_clip):
    if shutil.which("parallel") is None:
        pytest.skip("GNU parallel is not installed (apt-get install parallel)")
    fresh_copy(long_clip[0], tmp_path)
    recipe = readme_block("### Over several machines with GNU parallel")
    recipe = re.sub(r"^HOSTS=.*$", "HOSTS=:", recipe, flags=re.M)   # ":" is this machine
    result = run_recipe(recipe, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("/8 done: ") == 8
    out = tmp_path / "film_fast_x4.mp4"
    assert video_size(out) == (640, 480)
    assert work_folders(tmp_path) == []


def test_the_readmes_xargs_recipe_works_as_written(ffmpeg, tmp_path, long_clip):
    fresh_copy(long_clip[0], tmp_path)
    result = run_recipe(readme_block("### On one machine with xargs"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("/4 done: ") == 4
    assert video_size(tmp_path / "film_fast_x4.mp4") == (640, 480)
    assert work_folders(tmp_path) == []


def test_the_readmes_slurm_script_does_each_array_tasks_share(ffmpeg, tmp_path, long_clip):
    src = fresh_copy(long_clip[0], tmp_path)
    script = readme_block("### With a Slurm job array")     # #SBATCH lines are comments
    for task in (2, 1, 3):
        result = run_recipe(script, tmp_path, SLURM_ARRAY_TASK_ID=str(task),
                            SLURM_ARRAY_TASK_COUNT="3")
        assert result.returncode == 0, result.stderr
        assert f"part {task}/3 done: " in result.stderr
    joined = run_cli(src, "--scale", "4")
    assert joined.returncode == 0, joined.stderr
    assert re.search(r"resuming: (\d+) of \1 segments already done", joined.stderr)


# --- pure helpers -------------------------------------------------------------------------

def test_plan_covers_every_time_once_and_the_last_takes_the_remainder():
    plan = upscale.plan_segments(40.0, 24.9, 10.0)
    assert [(s.start_ms, s.end_ms) for s in plan] == \
        [(float("-inf"), 10040.0), (10040.0, float("inf"))]
    assert len(upscale.plan_segments(40.0, 25.1, 10.0)) == 3
    assert len(upscale.plan_segments(0.0, 0.0, 10.0)) == 1       # length unknown: one piece


@pytest.mark.parametrize("count,n", [(48, 8), (5, 8), (7, 3), (1, 1)])
def test_parts_share_the_segments_exactly_once(count, n):
    shares = [list(upscale.part_share(count, (k, n))) for k in range(1, n + 1)]
    assert sorted(i for share in shares for i in share) == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_segment_length_is_about_a_minute_of_work_within_bounds():
    def length(method, w, h, scale):
        video = upscale.SourceVideo(w, h, 24.0, 0)
        settings = upscale.Settings(upscale.METHODS[method], upscale.SizeRequest("scale", scale),
                                    upscale.CODECS["h264"])
        plan = upscale.plan_frames(settings.size, settings.method, w, h)
        return upscale.segment_length(settings, video, plan)
    assert 30 <= length("fsrcnn", 640, 360, 2) <= 60             # ~20 fps: ~1000 frames
    assert length("edsr", 640, 360, 4) == upscale.SEGMENT_MIN_SECONDS
    assert length("cubic", 320, 180, 2) == upscale.SEGMENT_MAX_SECONDS


def test_concat_list_quotes_names_as_ffmpeg_reads_them():
    assert upscale.concat_list([Path("/a/it's.mp4")]) == "file '/a/it'\\''s.mp4'\n"


def test_source_identity_tells_a_changed_tail_apart(tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"x" * (3 << 20))
    before = upscale.source_identity(f)
    with open(f, "r+b") as handle:
        handle.seek(-10, os.SEEK_END)
        handle.write(b"y" * 10)
    assert upscale.source_identity(f) != before


def test_part_goes_through_jobs_to_each_file(ffmpeg, tmp_path):
    for name in ("a", "b"):
        make_clip(ffmpeg, tmp_path / f"{name}.mp4", seconds=2)
    result = run_cli(tmp_path, "--model", "cubic", "--scale", "2", "--segment", "1",
                     "--part", "2/2", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(re.findall(r"\[(\w)\.mp4\] part 2/2 done: ", result.stderr)) == ["a", "b"]


def test_processes_that_plan_other_segments_share_the_first_ones_plan(ffmpeg, tmp_path,
                                                                      long_clip):
    # (as another OpenCV on another machine might, reading another frame rate)
    src = fresh_copy(long_clip[0], tmp_path)
    first = run_cli(src, *SEGMENT_OPTIONS, "--part", "1/2")
    assert first.returncode == 0, first.stderr
    result = run_cli(src, "--scale", "4", "--segment", "0.5")
    assert result.returncode == 0, result.stderr
    assert "resuming: 2 of 4 segments already done" in result.stderr
    assert same_output(ffmpeg, tmp_path / "film_fast_x4.mp4", long_clip[1])
