"""Any output size: --scale from 1 to 8, --height, --width, and a default that fits 4K.

The pure helpers first (the plan of sizes and network scales, output names), then real runs:
the size, name, frames and sharpness of what the tool writes."""
import subprocess

import cv2
import numpy as np
import pytest

import upscale
from conftest import (ROOT, decoded_frame_count, make_clip, needs_tensorflow, run_cli,
                      video_size)

FAST_LIKE = upscale.METHODS["fsrcnn"]           # a network with scales 2, 3, 4
CUBIC = upscale.METHODS["cubic"]


def request(kind, value=0.0):
    return upscale.SizeRequest(kind, value)


# --- The plan: what size, and which network scale --------------------------------------------

def test_height_keeps_the_shape_and_picks_the_smallest_network_scale_that_reaches_it():
    plan = upscale.plan_frames(request("height", 1080), FAST_LIKE, 1280, 720)
    assert (plan.width, plan.height, plan.scale, plan.label) == (1920, 1080, 2, "1080p")


def test_width_keeps_the_shape():
    plan = upscale.plan_frames(request("width", 1280), FAST_LIKE, 640, 360)
    assert (plan.width, plan.height, plan.scale, plan.label) == (1280, 720, 2, "w1280")


def test_a_fractional_scale_runs_the_next_network_scale_up_and_rounds_to_even_sides():
    plan = upscale.plan_frames(request("scale", 2.5), FAST_LIKE, 101, 75)
    assert (plan.width, plan.height) == (252, 188)          # 252.5 and 187.5, to even
    assert plan.scale == 3 and plan.label == "x2.5"


def test_a_whole_scale_is_exact_and_keeps_odd_sides_as_before():
    plan = upscale.plan_frames(request("scale", 3), FAST_LIKE, 51, 37)
    assert (plan.width, plan.height, plan.scale, plan.label) == (153, 111, 3, "x3")


def test_a_scale_beyond_the_networks_largest_runs_the_largest_and_says_so():
    plan = upscale.plan_frames(request("scale", 6), FAST_LIKE, 100, 50)
    assert (plan.width, plan.height, plan.scale) == (600, 300, 4)
    assert "largest" in plan.why


def test_baselines_resize_straight_to_the_size():
    plan = upscale.plan_frames(request("height", 1080), CUBIC, 1280, 720)
    assert (plan.width, plan.height, plan.scale) == (1920, 1080, 0)


def test_non_square_pixels_give_a_square_pixel_output_of_the_shown_shape():
    # DVD-style 720x480 with 32:27 pixels is shown 16:9
    plan = upscale.plan_frames(request("height", 1080), FAST_LIKE, 720, 480, sar=32 / 27)
    assert (plan.width, plan.height, plan.scale) == (1920, 1080, 3)


@pytest.mark.parametrize("size,scale", [((640, 360), 4), ((1280, 720), 3), ((1920, 1080), 2),
                                        ((1080, 1920), 2), ((960, 540), 4)])
def test_the_default_is_the_largest_scale_within_4k(size, scale):
    fit = upscale.fit_scale(FAST_LIKE, *size)
    assert fit.value == scale and ("4K" in fit.why) == (scale < 4)
    plan = upscale.plan_frames(request("fit"), FAST_LIKE, *size)
    assert plan.label == f"x{scale}" and max(plan.width, plan.height) <= 3840


@pytest.mark.parametrize("size,example", [((3840, 2160), "e.g. --scale 1.5"),
                                          ((2560, 1440), "e.g. --height 2160 or --scale 1.5")])
def test_a_source_too_big_for_any_scale_within_4k_asks_for_the_size_wanted(size, example):
    # (--height 2160 would not enlarge a source already 2160 high.)
    with pytest.raises(upscale.UpscaleError) as error:
        upscale.fit_scale(FAST_LIKE, *size)
    assert str(error.value).endswith(example)
    assert f"is already {size[0]}x{size[1]}:" in str(error.value)


def test_a_picture_gets_the_largest_scale_within_50_megapixels():
    still = upscale.picture_fit(1)
    assert still == (50_000_000, "within 50 megapixels")
    assert upscale.fit_scale(FAST_LIKE, 4032, 3024, *still).value == 2
    assert upscale.fit_scale(FAST_LIKE, 1000, 750, *still).value == 4
    assert upscale.fit_scale(FAST_LIKE, 1000, 750, *still).why == ""


def test_an_animation_gets_the_largest_scale_whose_frames_all_fit_in_memory():
    pixels, within = upscale.picture_fit(100)                  # 4 GB over 100 frames
    assert pixels == (4 << 30) // 400 and within == "within 4 GB for its 100 frames"
    fit = upscale.fit_scale(FAST_LIKE, 1000, 750, pixels, within)
    assert fit.value == 3 and fit.why == "to stay within 4 GB for its 100 frames"


@pytest.mark.parametrize("text,kind,value", [("2", "scale", 2), ("1.5", "scale", 1.5),
                                             ("1080p", "height", 1080), ("8", "scale", 8),
                                             ("1", "scale", 1)])
def test_scale_takes_any_number_from_1_to_8_or_a_height(text, kind, value):
    assert upscale.scale_arg(text) == request(kind, value)


@pytest.mark.parametrize("stem,is_output", [("clip_fsrcnn_x1.5", True), ("clip_espcn_1080p", True),
                                            ("clip_cubic_w1280", True), ("clip_fsrcnn_x2", True),
                                            ("clip_1080p", False), ("clip_fsrcnn_720", False)])
def test_outputs_of_any_size_are_recognised_by_name(stem, is_output):
    assert bool(upscale.OUTPUT_NAME_RE.search(stem)) == is_output


def test_size_options_reach_the_child_processes_of_jobs():
    parser = upscale.build_parser()
    for given in (["--height", "1080"], ["--width", "1280"], ["--scale", "1.5"]):
        args = parser.parse_args(["a.mp4", *given])
        assert upscale.forwarded_options(parser, args) == tuple(given)


# --- Real runs -------------------------------------------------------------------------------

@pytest.mark.parametrize("option,value,name,size", [
    ("--height", "96", "clip_fsrcnn_96p.mp4", (128, 96)),
    ("--width", "100", "clip_fsrcnn_w100.mp4", (100, 76)),
    ("--scale", "1.5", "clip_fsrcnn_x1.5.mp4", (96, 72)),
    ("--scale", "72p", "clip_fsrcnn_72p.mp4", (96, 72)),
])
def test_any_size_is_written_in_one_pass_with_every_frame(ffmpeg, tmp_path, option,
                                                          value, name, size):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="64x48", seconds=0.4)
    result = run_cli(src, "--model", "fsrcnn", option, value)
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / name) == size
    assert decoded_frame_count(ffmpeg, tmp_path / name) == 10
    assert f"-> {size[0]}x{size[1]}" in result.stderr


def test_a_rerun_with_the_same_size_skips_the_output(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="64x48", seconds=0.2)
    assert run_cli(src, "--model", "cubic", "--height", "96").returncode == 0
    again = run_cli(src, "--model", "cubic", "--height", "96")
    assert again.returncode == 0 and "skip:" in again.stderr


def test_the_default_says_it_chose_a_scale_to_stay_within_4k(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "wide.mp4", size="1400x800", seconds=0.04,
                    audio=False)
    result = run_cli(src, "--model", "cubic")
    assert result.returncode == 0, result.stderr
    assert "x2, to stay within 4K" in result.stderr
    assert video_size(tmp_path / "wide_cubic_x2.mp4") == (2800, 1600)


def test_a_rotated_source_asked_for_a_height_follows_its_shown_shape(ffmpeg, tmp_path):
    plain = make_clip(ffmpeg, tmp_path / "plain.mp4", size="64x48", seconds=0.2)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-display_rotation", "90", "-i", str(plain),
                    "-c", "copy", str(rotated)], check=True)
    result = run_cli(rotated, "--model", "fsrcnn", "--height", "128")
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / "rotated_fsrcnn_128p.mp4") == (96, 128)


def test_the_ffmpeg_baseline_scales_to_the_size_too(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="64x48", seconds=0.2)
    result = run_cli(src, "--model", "ffmpeg", "--height", "72")
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / "clip_ffmpeg_72p.mp4") == (96, 72)


def test_jobs_write_every_input_at_the_asked_size(ffmpeg, tmp_path):
    for name in ("a", "b"):
        make_clip(ffmpeg, tmp_path / f"{name}.mp4", size="64x48", seconds=0.2)
    result = run_cli(tmp_path, "--model", "cubic", "--width", "96", "-j", "2")
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / "a_cubic_w96.mp4") == video_size(tmp_path / "b_cubic_w96.mp4") \
        == (96, 72)


# Held-out photos (srdata's split): centre crops of 240x300.
PHOTOS = ("BSD200/106020.png", "BSD200/15088.png", "BSD200/183055.png")


def photo_crops():
    crops = []
    for name in PHOTOS:
        image = cv2.imread(str(ROOT.parent / "shared" / "datasets" / name))
        y, x = (image.shape[0] - 240) // 2, (image.shape[1] - 300) // 2
        crops.append(image[y:y + 240, x:x + 300])
    return crops


def small_video(ffmpeg, path, frames):
    """A lossless video of frames made 1.5x smaller by an antialiased downscale (ffmpeg's
    bicubic scaler, as real small video is made)."""
    h, w = frames[0].shape[:2]
    subprocess.run([ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
                    f"{w}x{h}", "-r", "25", "-i", "-", "-vf",
                    f"scale={w * 2 // 3}:{h * 2 // 3}:flags=bicubic", "-c:v", "ffv1",
                    "-pix_fmt", "bgr0", str(path)],
                   input=b"".join(f.tobytes() for f in frames), check=True)
    return path


def all_frames(path):
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            cap.release()
            return frames
        frames.append(frame)


def test_a_network_to_an_asked_height_is_sharper_than_resizing_straight_to_it(ffmpeg, tmp_path):
    # Held-out photos made 1.5x smaller and brought back with --height: the network at x2,
    # then down to the height, against cubic straight to it (both written losslessly).
    truth = photo_crops()
    src = small_video(ffmpeg, tmp_path / "small.mkv", truth)
    scores = {}
    for model in ("fsrcnn", "cubic"):
        result = run_cli(src, "--model", model, "--height", "240", "--codec", "ffv1")
        assert result.returncode == 0, result.stderr
        out = all_frames(tmp_path / f"small_{model}_240p.mkv")
        assert len(out) == len(truth) and out[0].shape == truth[0].shape
        scores[model] = np.mean([cv2.PSNR(t[8:-8, 8:-8], o[8:-8, 8:-8])
                                 for t, o in zip(truth, out)])
    # measured: +2.0 dB (fsrcnn 33.56, cubic 31.56)
    assert scores["fsrcnn"] >= scores["cubic"] + 1.0, scores


def test_parts_at_an_asked_height_join_into_the_whole_video(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="64x48", seconds=2)
    for part in ("2/2", "1/2"):
        result = run_cli(src, "--model", "cubic", "--height", "72", "--segment", "0.5",
                         "--part", part)
        assert result.returncode == 0 and f"part {part} done" in result.stderr, result.stderr
    joined = run_cli(src, "--model", "cubic", "--height", "72", "--segment", "0.5")
    assert joined.returncode == 0 and "50 done by an earlier run" in joined.stderr, \
        joined.stderr
    assert video_size(tmp_path / "clip_cubic_72p.mp4") == (96, 72)
    assert decoded_frame_count(ffmpeg, tmp_path / "clip_cubic_72p.mp4") == 50


@needs_tensorflow
def test_benchmark_measures_a_run_at_an_asked_size(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="64x48", seconds=0.4)
    result = run_cli(src, "--model", "fsrcnn", "--height", "72", "--benchmark")
    assert result.returncode == 0, result.stderr
    assert "fsrcnn 72p" in result.stdout and "64x48 -> 96x72" in result.stdout, result.stdout
