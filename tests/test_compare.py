"""--compare: methods side by side, measured against the original."""
import json

import cv2
import numpy as np

import upscale
from conftest import (ROOT, cli_env, decoded_frame_count, make_clip, needs_tensorflow,
                      recording_ffmpeg, run_cli, video_size)


def flat_image(path):
    """One colour all over: shrinking it and enlarging it again with nearest neighbour
    gives it back exactly."""
    cv2.imwrite(str(path), np.full((48, 64, 3), (30, 140, 220), np.uint8))
    return path


def smooth_image(path):
    """A smooth picture (blurred shapes), on which interpolation beats nearest neighbour."""
    image = np.zeros((96, 128, 3), np.uint8)
    cv2.circle(image, (50, 45), 30, (40, 200, 90), -1)
    cv2.rectangle(image, (70, 20), (120, 80), (200, 60, 30), -1)
    cv2.imwrite(str(path), cv2.GaussianBlur(image, (0, 0), 3))
    return path


def report_of(tmp_path, *args):
    report = tmp_path / "report.json"
    result = run_cli("--compare", *args, "--report", report, "--output-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    return result, json.loads(report.read_text())


def test_identical_frames_give_the_documented_psnr_cap(tmp_path):
    image = flat_image(tmp_path / "flat.png")
    _, rows = report_of(tmp_path, image, "--scale", "2", "--methods", "nearest")
    assert rows[0]["psnr"] == upscale.PSNR_CAP == 100.0
    assert rows[0]["ssim"] == 1.0


def test_interpolation_ranks_above_nearest_on_a_smooth_picture(tmp_path):
    image = smooth_image(tmp_path / "smooth.png")
    result, rows = report_of(tmp_path, image, "--scale", "4", "--methods",
                             "nearest,cubic,fsrcnn")
    by_method = {r["method"]: r for r in rows}
    assert by_method["cubic"]["psnr"] > by_method["nearest"]["psnr"]
    assert by_method["fsrcnn"]["psnr"] > by_method["nearest"]["psnr"]
    best = [line for line in result.stdout.splitlines() if line.startswith("nearest")][0]
    assert "*" not in best.split()[1]          # nearest is not marked best for PSNR


def test_footage_is_made_small_with_antialiased_bicubic_as_the_papers_do():
    # MATLAB's imresize(x, 1/3, 'bicubic') of a step edge: the kernel is stretched 3x, so
    # the edge spreads over neighbouring samples (plain cv2.resize would alias it)
    step = np.zeros((12, 12), np.uint8)
    step[:, 6:] = 255
    _, low = upscale.truth_and_low(step, 3)
    assert low.shape == (4, 4)
    assert list(low[0]) == [0, 19, 236, 255]


@needs_tensorflow
def test_report_has_the_documented_keys_and_types(tmp_path):
    image = smooth_image(tmp_path / "smooth.png")
    _, rows = report_of(tmp_path, image, "--scale", "8", "--methods", "lapsrn,espcn,linear")
    assert [r["method"] for r in rows] == ["lapsrn", "espcn", "linear"]
    for row in rows:
        assert tuple(row) == upscale.REPORT_KEYS
        assert row["scale"] == 8 and row["input"].endswith("smooth.png")
        if row["status"] == "ok":
            assert all(isinstance(row[k], float) for k in ("psnr", "ssim", "ms_per_frame"))
            assert row["vmaf"] is None or isinstance(row["vmaf"], float)
    espcn = rows[1]                                    # ESPCN's scales end at x4
    assert espcn["status"] == "skipped" and "no model up to x8" in espcn["reason"]
    assert espcn["psnr"] is None


def test_vmaf_is_measured_when_ffmpeg_has_libvmaf(ffmpeg, tmp_path):
    assert upscale.has_libvmaf(ffmpeg), "the imageio-ffmpeg build has libvmaf"
    image = smooth_image(tmp_path / "smooth.png")
    _, rows = report_of(tmp_path, image, "--scale", "2", "--methods", "cubic")
    assert 0 <= rows[0]["vmaf"] <= 100


def test_grid_video_has_one_labelled_tile_per_method_and_every_frame(ffmpeg, tmp_path):
    clip = make_clip(ffmpeg, tmp_path / "clip.mp4", size="64x48", seconds=0.4, rate="25")
    grid = tmp_path / "grid.mp4"
    result = run_cli("--compare", clip, "--scale", "2", "--methods", "nearest,cubic,espcn",
                     "-o", grid)
    assert result.returncode == 0, result.stderr
    # the clip is the truth: truth + 3 methods in a row of 64x48 tiles, 4-pixel gaps
    assert video_size(grid) == (4 * 64 + 3 * 4, 48)
    assert decoded_frame_count(ffmpeg, grid) == 10
    assert upscale.probe(ffmpeg, grid).video[0].codec == "h264"       # browsers play it
    assert (tmp_path / "grid.png").is_file()


def test_folder_of_images_is_compared_image_by_image(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    smooth_image(folder / "a.png")
    flat_image(folder / "b.png")
    _, rows = report_of(tmp_path, folder, "--scale", "2", "--methods", "cubic")
    assert [r["input"].rsplit("/", 1)[-1] for r in rows] == ["a.png", "b.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_compare_x2.png", "b_compare_x2.png"]


def test_a_still_gif_is_compared_as_a_picture_without_a_grid_video(tmp_path):
    animation = cv2.Animation()
    animation.frames, animation.durations = [np.full((48, 64, 3), 90, np.uint8)], [100]
    ok, data = cv2.imencodeanimation(".gif", animation, [])
    (tmp_path / "icon.gif").write_bytes(bytes(data))
    _, rows = report_of(tmp_path, tmp_path / "icon.gif", "--scale", "2", "--methods", "cubic")
    assert rows[0]["frames"] == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["icon_compare_x2.png"]


def test_an_animated_picture_is_compared_over_every_frame(tmp_path):
    animation = cv2.Animation()
    animation.frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(4)]
    animation.durations, animation.loop_count = [100] * 4, 0
    ok, data = cv2.imencodeanimation(".webp", animation, [])
    assert ok
    (tmp_path / "anim.webp").write_bytes(bytes(data))
    _, rows = report_of(tmp_path, tmp_path / "anim.webp", "--scale", "2", "--methods", "cubic")
    assert rows[0]["frames"] == 4
    assert (tmp_path / "out" / "anim_compare_x2.png").is_file()


def test_comparing_a_folder_again_leaves_out_the_pictures_it_wrote_there(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    smooth_image(folder / "a.png")
    for scale in ("2", "3"):
        result = run_cli("--compare", folder, "--scale", scale, "--methods", "cubic")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "a.png", "a_compare_x2.png", "a_compare_x3.png"]
    assert "a_compare_x2.png" not in result.stdout


def test_no_reference_gives_pictures_without_measurements(ffmpeg, tmp_path):
    clip = make_clip(ffmpeg, tmp_path / "low.mp4", size="48x32", seconds=0.2)
    _, rows = report_of(tmp_path, clip, "--scale", "2", "--methods", "cubic", "--no-reference")
    assert rows[0]["psnr"] is None and rows[0]["frames"] == 5
    assert (tmp_path / "out" / "low_compare_x2.png").is_file()


def test_unknown_compare_method_is_a_usage_error(tmp_path):
    result = run_cli("--compare", tmp_path, "--methods", "cubic,magic")
    assert result.returncode == 2 and "magic" in result.stderr


def test_the_detail_crop_is_taken_where_the_picture_has_most_detail():
    image = np.full((120, 160, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    image[80:110, 10:50] = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)   # texture
    assert upscale.most_detailed_window(image, 30, 40) == (80, 10)


@needs_tensorflow
def test_compare_measures_at_a_fractional_scale_as_the_tool_upscales(tmp_path):
    # a held-out photo shrunk 1.5x; each method brings it back to the photo's own size
    photo = cv2.imread(str(ROOT.parent / "shared" / "datasets" / "BSD200" / "106020.png"))
    cv2.imwrite(str(tmp_path / "photo.png"), photo[100:220, 150:330])      # its centre
    _, rows = report_of(tmp_path, tmp_path / "photo.png", "--scale", "1.5", "--methods",
                        "fast,cubic,ffmpeg,lapsrn")
    by_method = {r["method"]: r for r in rows}
    assert all(r["status"] == "ok" and r["scale"] == 1.5 for r in rows), rows
    assert by_method["fast"]["psnr"] > by_method["cubic"]["psnr"] + 0.5
    assert cv2.imread(str(tmp_path / "out" / "photo_compare_x1.5.png")) is not None


def test_a_scale_a_network_cannot_reach_is_skipped_with_the_reason(tmp_path):
    image = flat_image(tmp_path / "flat.png")
    _, rows = report_of(tmp_path, image, "--scale", "6", "--methods", "fast,cubic")
    fast = [r for r in rows if r["method"] == "fast"][0]
    assert fast["status"] == "skipped" and "up to x6" in fast["reason"]


def scale_filters(calls):
    """The filter chains with a bicubic scale of the ffmpeg calls a recording ffmpeg noted."""
    return [word for line in calls.read_text().splitlines() for word in line.split()
            if "scale=" in word and "flags=bicubic" in word]


def test_compare_runs_the_ffmpeg_baseline_exactly_as_model_ffmpeg_does(ffmpeg, tmp_path):
    big = make_clip(ffmpeg, tmp_path / "big.mp4", size="64x48", seconds=0.2, audio=False)
    small = make_clip(ffmpeg, tmp_path / "small.mp4", size="32x24", seconds=0.2, audio=False)
    recorder = recording_ffmpeg(ffmpeg, tmp_path / "bin")
    env = cli_env(UPSCALE_FFMPEG=str(recorder))
    made = run_cli(small, "--model", "ffmpeg", "--scale", "2", env=env)
    assert made.returncode == 0, made.stderr
    written = scale_filters(recorder.parent / "calls")
    (recorder.parent / "calls").unlink()
    compared = run_cli("--compare", big, "--scale", "2", "--methods", "ffmpeg",
                       "--output-dir", tmp_path / "out", env=env)
    assert compared.returncode == 0, compared.stderr
    # Both make 64x48 from 32x24: one filter, the same words.
    assert written and scale_filters(recorder.parent / "calls") == written
