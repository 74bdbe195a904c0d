"""--tile, --device and --jobs: the options that trade memory, hardware and cores; and the
pipeline's in-order writer, which lets several workers share the encoder."""
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

import upscale
from conftest import (SCRIPT, cli_env, leftovers, make_clip, model_file, needs_tensorflow,
                      run_cli, segment_being_written, video_size)


@pytest.mark.parametrize("name,scale", [("fsrcnn", 4), ("espcn", 3), ("fsrcnn-small", 2),
                                        pytest.param("lapsrn", 8, marks=needs_tensorflow)])
def test_tiled_upscaling_is_seamless(model_dir, name, scale):
    method = upscale.METHODS[name]
    path = model_file(name, scale)
    rng = np.random.default_rng(5)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (70, 110, 3), dtype=np.uint8), (3, 3), 0)
    whole = upscale.NetworkUpscaler(method, scale, path, tile=0).upscale(frame)
    tiled = upscale.NetworkUpscaler(method, scale, path, tile=24).upscale(frame)
    assert tiled.shape == whole.shape
    assert cv2.PSNR(tiled, whole) >= 50


def test_tiles_cover_every_pixel_once():
    spans = upscale.tile_spans(100, 32, 8)
    assert [(a, b) for _, _, a, b in spans] == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert all(s <= a and b <= e for s, e, a, b in spans)


def test_automatic_tiles_keep_a_4k_frame_within_the_memory_budget():
    fsrcnn = upscale.METHODS["fsrcnn"]
    assert upscale.auto_tile(fsrcnn, 112, 200) == 0           # small frames: one piece
    tile = upscale.auto_tile(fsrcnn, 2160, 3840)
    assert tile > 0
    side = tile + 2 * fsrcnn.reach
    assert side * side * fsrcnn.features * upscale.BYTES_PER_FEATURE <= \
        upscale.NETWORK_MEMORY_BUDGET


def test_light_networks_tile_big_frames_to_stay_in_cache_and_small_ones_not():
    for name in ("fsrcnn", "fsrcnn-small", "espcn"):
        method = upscale.METHODS[name]
        assert upscale.cache_tile(method, 112, 200) == 0
        assert upscale.cache_tile(method, 180, 320) == 0
        assert upscale.cache_tile(method, 360, 640) == method.cache_tile > 0
    assert upscale.cache_tile(upscale.METHODS["lapsrn"], 720, 1280) == 0


@pytest.mark.parametrize("name", ["fsrcnn", "espcn"])
def test_automatic_cache_tiles_give_the_untiled_picture(model_dir, name):
    method = upscale.METHODS[name]
    path = model_file(name, 2)
    rng = np.random.default_rng(6)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (270, 301, 3), dtype=np.uint8), (3, 3), 0)
    automatic = upscale.NetworkUpscaler(method, 2, path)
    assert upscale.cache_tile(method, 270, 301) > 0
    whole = upscale.NetworkUpscaler(method, 2, path, tile=0).upscale(frame)
    tiled = automatic.upscale(frame)
    assert tiled.shape == whole.shape == (540, 602, 3)
    assert cv2.PSNR(tiled, whole) >= 50


def test_tile_option_upscales_in_pieces(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="96x64", seconds=0.2)
    result = run_cli(src, "--scale", "3", "--tile", "32")
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / "clip_fast_x3.mp4") == (288, 192)


@pytest.mark.parametrize("value", ["5", "-1", "big"])
def test_bad_tile_is_a_usage_error(value):
    result = run_cli("x.mp4", "--tile", value)
    assert result.returncode == 2 and "tile" in result.stderr


def test_unavailable_device_is_one_clear_error(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    other = make_clip(ffmpeg, tmp_path / "other.mp4", seconds=0.2)
    device = "cuda" if upscale.device_problem("cuda") else "opencl"
    if not upscale.device_problem(device):
        pytest.fail("this machine has both CUDA and OpenCL: nothing unavailable to test")
    result = run_cli(src, other, "--scale", "2", "--device", device)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"--device {device}" in errors[0] and "--device cpu" in errors[0]
    assert leftovers(tmp_path) == [] and not list(tmp_path.glob("*_fast_x2.mp4"))


def test_auto_device_falls_back_to_the_cpu(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    result = run_cli(src, "--scale", "2", "--device", "auto")
    assert result.returncode == 0, result.stderr
    usable = [d for d in ("cuda", "opencl") if not upscale.device_problem(d)]
    chosen = [d for d in usable + ["cpu"] if f"running the network on the {d}" in result.stderr]
    assert chosen == ["cpu"] if not usable else len(chosen) == 1, result.stderr


def test_jobs_do_every_input_and_keep_messages_per_file(ffmpeg, tmp_path):
    for name in ("a", "b", "c"):
        make_clip(ffmpeg, tmp_path / f"{name}.mp4", seconds=0.3)
    (tmp_path / "d.mp4").write_text("not a video")
    result = run_cli(tmp_path, "--scale", "2", "--jobs", "2")
    assert result.returncode == 1
    for name in ("a", "b", "c"):
        assert (tmp_path / f"{name}_fast_x2.mp4").is_file()
        assert any(line.startswith(f"[{name}.mp4] done:") for line in result.stderr.splitlines())
    assert any(line.startswith("[d.mp4] upscale: error:") for line in result.stderr.splitlines())
    assert "3 done, 0 skipped, 1 failed: " in result.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("quiet", [(), ("-q",)])
def test_jobs_summary_counts_done_skipped_and_failed_like_a_single_run(
        ffmpeg, tmp_path, quiet):
    for name in ("a", "b"):
        make_clip(ffmpeg, tmp_path / f"{name}.mp4", seconds=0.2)
    (tmp_path / "c.mp4").write_text("not a video")
    args = ("--model", "cubic", "--scale", "2", *quiet)
    assert run_cli(tmp_path / "a.mp4", *args).returncode == 0      # a is done already
    expected = f"1 done, 1 skipped, 1 failed: {tmp_path / 'c.mp4'}"
    jobs = run_cli(tmp_path, *args, "--jobs", "2")
    assert jobs.returncode == 1 and jobs.stderr.splitlines()[-1] == expected
    (tmp_path / "b_cubic_x2.mp4").unlink()
    single = run_cli(tmp_path, *args)
    assert single.returncode == 1 and single.stderr.splitlines()[-1] == expected


def test_jobs_name_each_file_once_per_line(ffmpeg, tmp_path):
    for name in ("a", "b"):
        make_clip(ffmpeg, tmp_path / f"{name}.mp4", seconds=0.2)
    result = run_cli(tmp_path, "--model", "cubic", "--scale", "2", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    starts = [line for line in result.stderr.splitlines() if "64x48 ->" in line]
    assert sorted(starts)[0].startswith("[a.mp4] 64x48 -> 128x96") and len(starts) == 2


def test_the_same_input_named_twice_is_done_once(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "a.mp4", seconds=0.2)
    for jobs in ("1", "2"):
        result = run_cli(src, tmp_path / "." / "a.mp4", "--model", "cubic", "--scale", "2",
                         "--jobs", jobs, "--overwrite")
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("done: ") == 1


@needs_tensorflow
def test_jobs_interrupted_leave_nothing(ffmpeg, tmp_path):
    for name in ("a", "b"):
        make_clip(ffmpeg, tmp_path / f"{name}.mp4", size="160x120", seconds=20)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), "--model", "lapsrn",
                             "--scale", "4", "--jobs", "2"], env=cli_env(),
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
            segment_being_written(tmp_path, name) for name in ("a", "b")):
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


@needs_tensorflow
def test_ctrl_c_during_jobs_is_one_clean_line_per_job(ffmpeg, tmp_path):
    for name in ("a", "b"):
        make_clip(ffmpeg, tmp_path / f"{name}.mp4", size="160x120", seconds=20)
    # A terminal's Ctrl-C goes to the whole foreground process group.
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), "--model", "lapsrn",
                             "--scale", "4", "--jobs", "2"], env=cli_env(),
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
            segment_being_written(tmp_path, name) for name in ("a", "b")):
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "terminate called" not in err and "Traceback" not in err
    for name in ("a", "b"):
        assert [line for line in err.splitlines() if line.startswith(f"[{name}.mp4]") and
                "interrupted" in line] == [f"[{name}.mp4] upscale: interrupted; unfinished "
                                           "output removed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


@needs_tensorflow
@pytest.mark.parametrize("model", ["fsrcnn", "espcn"])
def test_benchmark_prints_each_stage_both_loops_their_ratio_psnr_and_memory(
        ffmpeg, tmp_path, model):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="80x48", seconds=1.0)
    result = run_cli(src, "--model", model, "--scale", "2", "--benchmark")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    stages = {m[1]: (float(m[2]), float(m[3])) for m in
              re.finditer(r"(?m)^(.*?) +(\d+\.\d+) +(\d+\.\d+)$", out)}
    for stage in ("decode (VideoCapture)", "DnnSuperResImpl.upsample alone (plain loop's)",
                  "network alone, 1 stream, all threads", "network alone, 1 stream, 1 thread",
                  "colour convert / merge",
                  "encode (x264)", "plain sequential loop, end to end",
                  "upscale.py pipeline, end to end"):
        seconds, fps = stages[stage]
        assert seconds > 0 and fps > 0
    ratio = float(out.split("speed-up over the plain loop (best against best): ")[1]
                  .split("x")[0])
    plain, ours = stages["plain sequential loop, end to end"][0], \
        stages["upscale.py pipeline, end to end"][0]
    # The ratio is of the printed figures (rounded to 1 ms, so within that).
    assert (plain - 0.0005) / (ours + 0.0005) - 0.005 <= ratio <= \
        (plain + 0.0005) / (ours - 0.0005) + 0.005
    # The ideal pipeline is the printed stages' times over the cores, and its ceiling the
    # plain loop's time over that.
    ideal = re.search(r"shared over (\d+) cores with no loss: (\d+\.\d+) s, at most "
                      r"(\d+\.\d+)x", out)
    parts = ("decode (VideoCapture)", "network alone, 1 stream, 1 thread",
             "colour convert / merge", "encode (x264)")
    work = sum(stages[part][0] for part in parts)
    assert abs(float(ideal[2]) - work / int(ideal[1])) < 0.003
    best_s = float(ideal[2])                    # printed to 1 ms: the ratio within that
    assert (plain - 0.0005) / (best_s + 0.0005) - 0.005 <= float(ideal[3]) <= \
        (plain + 0.0005) / (best_s - 0.0005) + 0.005
    assert float(out.split("DnnSuperResImpl.upsample (min of 20): ")[1].split()[0]) >= 45
    assert float(out.split("peak resident memory of this benchmark: ")[1].split()[0]) > 0
    # It leads with what a user wants: both loops' fps end to end and their ratio.
    lines = out.splitlines()
    assert lines[1].startswith("upscale.py end to end: ") and " fps (" in lines[1]
    assert lines[2].startswith("plain loop end to end: ") and " fps (" in lines[2]
    assert lines[3].startswith("speed-up over the plain loop")
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def benchmark_result(plain_runs, tool_runs):
    stages = [("network alone, as the pipeline (2 streams)", 1.0)]
    return upscale.BenchmarkResult("clip.mp4", 250, (200, 112), (800, 448), "fsrcnn", 4, 2,
                                   2, stages, plain_runs, tool_runs, 1.0, float("nan"), 140)


def test_benchmark_warns_when_its_runs_vary_too_much_to_trust_the_ratio():
    steady, noisy = io.StringIO(), io.StringIO()
    upscale.report_benchmark(benchmark_result([2.0, 2.1, 2.05], [1.2, 1.25, 1.22]), steady)
    upscale.report_benchmark(benchmark_result([2.0, 2.9, 2.05], [1.2, 1.25, 1.22]), noisy)
    assert "unreliable" not in steady.getvalue()
    assert "differed by up to 45%" in noisy.getvalue() and "unreliable" in noisy.getvalue()
    assert "speed-up over the plain loop (best against best): 1.67x" in noisy.getvalue()


def level_frame(level):
    """A 64x48 frame of one grey level: its order shows in its brightness after encoding."""
    return np.full((48, 64, 3), level, np.uint8)


def written_levels(path):
    cap = cv2.VideoCapture(str(path))
    levels = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return levels
        levels.append(int(round(frame.mean())))


def test_frames_handed_in_out_of_order_by_several_workers_are_written_in_order(tmp_path):
    stop = threading.Event()
    writer = upscale.InOrderWriter(tmp_path / "t.mp4", upscale.video_writer("mp4v"), 25, stop)

    # Two workers: one gets the even frames and is slow, the other the odd ones.
    def worker(seqs, delay):
        for seq in seqs:
            time.sleep(delay)
            writer.put(seq, level_frame(20 + 10 * seq))
    threads = [threading.Thread(target=worker, args=(range(0, 20, 2), 0.02)),
               threading.Thread(target=worker, args=(range(1, 20, 2), 0.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert writer.written == 20 and not writer.waiting
    levels = written_levels(tmp_path / "t.mp4")
    assert len(levels) == 20
    # 10 levels apart in the order handed in (mp4v's limited range shifts them all a little)
    assert all(8 <= b - a <= 12 for a, b in zip(levels, levels[1:]))
    assert all(abs(level - (20 + 10 * i)) <= 5 for i, level in enumerate(levels))


def test_a_worker_far_ahead_waits_until_the_frame_due_next_is_written(tmp_path):
    stop = threading.Event()
    writer = upscale.InOrderWriter(tmp_path / "t.mp4", upscale.video_writer("mp4v"), 25, stop)
    ahead = threading.Thread(target=lambda: [writer.put(seq, level_frame(40 + seq))
                                             for seq in range(1, upscale.QUEUE_DEPTH + 3)])
    ahead.start()
    ahead.join(0.5)
    assert ahead.is_alive()                      # held: frame 0 has not come yet...
    assert len(writer.waiting) == upscale.QUEUE_DEPTH + 1    # ...so memory stays bounded
    writer.put(0, level_frame(40))
    ahead.join(5)
    writer.close()
    assert not ahead.is_alive() and writer.written == upscale.QUEUE_DEPTH + 3


def test_a_stopped_run_releases_a_waiting_worker(tmp_path):
    stop = threading.Event()
    writer = upscale.InOrderWriter(tmp_path / "t.mp4", upscale.video_writer("mp4v"), 25, stop)
    ahead = threading.Thread(target=lambda: [writer.put(seq, level_frame(50))
                                             for seq in range(1, upscale.QUEUE_DEPTH + 3)])
    ahead.start()
    ahead.join(0.3)
    assert ahead.is_alive()
    stop.set()                                    # another stage failed, or Ctrl-C
    ahead.join(5)
    writer.close()
    assert not ahead.is_alive() and writer.written == 0


@pytest.mark.parametrize("argv", [
    ["a.mp4", "b.mp4", "-j", "2"],
    ["a.mp4", "b.mp4", "-j", "2", "--model", "espcn", "--scale", "2", "-y", "-q",
     "--codec", "h264", "--crf", "20", "--preset", "fast", "--tile", "64", "--device", "auto",
     "--output-dir", "out", "--model-dir", "m", "--format", "mkv"],
    ["a.mp4", "b.mp4", "--jobs", "3", "--tile", "0", "-n"]])
def test_each_job_gets_every_option_it_was_given(argv):
    parser = upscale.build_parser()
    given = parser.parse_args(argv)
    child = parser.parse_args([*upscale.forwarded_options(parser, given), "--", "a.mp4"])
    assert vars(child) == dict(vars(given), inputs=["a.mp4"], jobs=1)
