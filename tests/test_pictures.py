"""Pictures: PNG, JPEG, WebP, AVIF, HEIC, BMP, TIFF, JPEG 2000 and PPM files, alone or in
folders with videos, upscaled with the same models, sizes, naming and rules as videos."""
import re
import struct
import subprocess
import zlib

import cv2
import numpy as np
import pytest

import upscale
from conftest import ROOT, cli_env, leftovers, make_clip, run_cli, video_size


def photo(width=80, height=60):
    image = cv2.imread(str(ROOT.parent / "shared" / "datasets" / "BSD200" / "106020.png"))
    return np.ascontiguousarray(image[:height, :width])


def read(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def with_exif_orientation(jpeg, orientation):
    """JPEG bytes with an EXIF APP1 segment whose Orientation tag is `orientation`."""
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 1) + \
        struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    body = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


@pytest.mark.parametrize("source,output", [("photo.png", "photo_fast_x2.png"),
                                           ("photo.jpg", "photo_fast_x2.jpg"),
                                           ("photo.jpeg", "photo_fast_x2.jpg"),
                                           ("photo.webp", "photo_fast_x2.webp"),
                                           ("photo.avif", "photo_fast_x2.avif"),
                                           ("photo.bmp", "photo_fast_x2.png"),
                                           ("photo.tif", "photo_fast_x2.png"),
                                           ("photo.jp2", "photo_fast_x2.png"),
                                           ("photo.ppm", "photo_fast_x2.png")])
def test_each_picture_format_is_upscaled_into_its_named_output(tmp_path, source, output):
    cv2.imwrite(str(tmp_path / source), photo())
    result = run_cli(tmp_path / source, "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert read(tmp_path / output).shape == (120, 160, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source, output])


def test_a_folder_of_pictures_and_videos_is_upscaled_together(ffmpeg, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), photo())
    make_clip(ffmpeg, tmp_path / "b.mp4", size="64x48", seconds=0.2)
    cv2.imwrite(str(tmp_path / "c.jpg"), photo())
    result = run_cli(tmp_path, "--model", "cubic", "--height", "90")
    assert result.returncode == 0, result.stderr
    assert read(tmp_path / "a_cubic_90p.png").shape == (90, 120, 3)
    assert video_size(tmp_path / "b_cubic_90p.mp4") == (120, 90)
    assert read(tmp_path / "c_cubic_90p.jpg").shape == (90, 120, 3)
    assert "3 done, 0 skipped, 0 failed" in result.stderr


def test_the_network_is_what_upscales_a_picture(tmp_path):
    cv2.imwrite(str(tmp_path / "photo.png"), photo())
    assert run_cli(tmp_path / "photo.png", "--scale", "2").returncode == 0
    method = upscale.METHODS["fast"]
    expected = upscale.NetworkUpscaler(method, 2, upscale.locate_model(method, 2)).upscale(
        photo())
    assert np.array_equal(read(tmp_path / "photo_fast_x2.png"), expected)


def test_the_ffmpeg_baseline_scales_a_picture_as_ffmpeg_does(ffmpeg, tmp_path):
    # (it stopped with an error in upscale.py itself: the baseline only knew whole videos)
    cv2.imwrite(str(tmp_path / "photo.png"), photo())
    result = run_cli(tmp_path / "photo.png", "--model", "ffmpeg", "--scale", "2")
    assert result.returncode == 0, result.stderr
    by_ffmpeg = subprocess.run([ffmpeg, "-v", "error", "-i", str(tmp_path / "photo.png"), "-vf",
                                "scale=160:120:flags=bicubic", "-f", "rawvideo", "-pix_fmt",
                                "bgr24", "-"], capture_output=True, check=True).stdout
    expected = np.frombuffer(by_ffmpeg, np.uint8).reshape(120, 160, 3)
    assert np.abs(read(tmp_path / "photo_ffmpeg_x2.png").astype(int) - expected).max() <= 1


@pytest.mark.skipif(not upscale.reads_tensorflow(), reason="no cache tiles on OpenCV 5.1's "
                    "engine: a picture this small is one tile there")
def test_a_big_picture_shows_how_far_its_tiles_have_got(tmp_path):
    cv2.imwrite(str(tmp_path / "photo.png"), photo(480, 320))
    # (in a log, a progress line every UPSCALE_JOB_PROGRESS seconds: here, at every tile)
    result = run_cli(tmp_path / "photo.png", "--scale", "2",
                     env=cli_env(UPSCALE_JOB_PROGRESS="0.000001"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "tiles)" in line]
    assert len(lines) == 12                # 128-pixel tiles: 4 x 3
    assert lines[0].startswith("photo.png: 8% (1/12 tiles), ETA ")
    assert lines[-1].startswith("photo.png: 100% (12/12 tiles), ETA ")


def test_a_rerun_skips_a_picture_made_the_same_way_and_refuses_one_made_otherwise(tmp_path):
    cv2.imwrite(str(tmp_path / "photo.jpg"), photo())
    assert run_cli(tmp_path / "photo.jpg", "--scale", "2").returncode == 0
    again = run_cli(tmp_path / "photo.jpg", "--scale", "2", "--codec", "h265")
    assert again.returncode == 0 and "skip:" in again.stderr     # codecs are for videos
    other = run_cli(tmp_path / "photo.jpg", "--scale", "2", "--model", "cubic",
                    "-o", tmp_path / "photo_fast_x2.jpg")
    assert other.returncode == 1 and "model fast, asked cubic" in other.stderr


def test_a_later_run_refuses_a_picture_that_another_source_of_the_same_name_made(tmp_path):
    # (photo.bmp and photo.tif both name photo_fast_x2.png; in one run that is an error
    # already, and a shell loop runs them one at a time)
    cv2.imwrite(str(tmp_path / "photo.bmp"), photo())
    cv2.imwrite(str(tmp_path / "photo.tif"), photo()[::-1])
    assert run_cli(tmp_path / "photo.bmp", "--scale", "2").returncode == 0
    before = (tmp_path / "photo_fast_x2.png").read_bytes()
    result = run_cli(tmp_path / "photo.tif", "--scale", "2")
    assert result.returncode == 1 and "from another source file" in result.stderr
    assert (tmp_path / "photo_fast_x2.png").read_bytes() == before


def test_exif_orientation_is_applied_as_viewers_apply_it(tmp_path):
    ok, jpeg = cv2.imencode(".jpg", photo(80, 60))
    (tmp_path / "turned.jpg").write_bytes(with_exif_orientation(bytes(jpeg), 6))   # 90 cw
    assert run_cli(tmp_path / "turned.jpg", "--model", "cubic", "--scale", "2").returncode == 0
    assert read(tmp_path / "turned_cubic_x2.jpg").shape == (160, 120, 3)


def test_transparency_is_kept_and_enlarged_with_cubic(tmp_path):
    alpha = np.tile(np.linspace(0, 255, 80).astype(np.uint8), (60, 1))
    cv2.imwrite(str(tmp_path / "logo.png"), np.dstack([photo(), alpha]))
    assert run_cli(tmp_path / "logo.png", "--scale", "2").returncode == 0
    out = read(tmp_path / "logo_fast_x2.png")
    assert out.shape == (120, 160, 4)
    assert np.array_equal(out[:, :, 3], cv2.resize(alpha, (160, 120),
                                                   interpolation=cv2.INTER_CUBIC))


def deep_photo():
    """photo() in 16 bits, with levels between its 8-bit ones (a scan's, a raw photo's)."""
    fine = np.tile(np.linspace(0, 250, 80).astype(np.uint16), (60, 1))
    return photo().astype(np.uint16) * 257 + fine[:, :, None]


@pytest.mark.parametrize("source,options,output", [
    ("scan.png", (), "scan_fast_x2.png"), ("scan.tif", (), "scan_fast_x2.png"),
    ("scan.png", ("--model", "ffmpeg"), "scan_ffmpeg_x2.png")])
def test_a_16_bit_picture_stays_16_bit_with_its_finer_levels(tmp_path, source, options,
                                                             output):
    cv2.imwrite(str(tmp_path / source), deep_photo())
    result = run_cli(tmp_path / source, "--scale", "2", *options)
    assert result.returncode == 0, result.stderr
    assert "8-bit" not in result.stderr
    out = read(tmp_path / output)
    assert out.dtype == np.uint16 and out.shape == (120, 160, 3)
    assert np.count_nonzero(out % 257) > 0.9 * out.size       # not 8-bit levels
    # As its 8-bit twin comes out, to within a level.
    cv2.imwrite(str(tmp_path / "twin.png"), cv2.convertScaleAbs(deep_photo(), alpha=1 / 257))
    assert run_cli(tmp_path / "twin.png", "--scale", "2", *options).returncode == 0
    twin = read(tmp_path / output.replace("scan", "twin"))
    assert np.abs(out / 257.0 - twin).mean() < 0.6


def test_a_16_bit_picture_with_transparency_keeps_both_in_16_bits(tmp_path):
    alpha = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (60, 1))
    cv2.imwrite(str(tmp_path / "logo.png"), np.dstack([deep_photo(), alpha]))
    assert run_cli(tmp_path / "logo.png", "--scale", "2").returncode == 0
    out = read(tmp_path / "logo_fast_x2.png")
    assert out.dtype == np.uint16 and out.shape == (120, 160, 4)
    assert np.array_equal(out[:, :, 3], cv2.resize(alpha, (160, 120),
                                                   interpolation=cv2.INTER_CUBIC))


def test_a_16_bit_picture_written_as_jpeg_says_it_becomes_8_bit(tmp_path):
    cv2.imwrite(str(tmp_path / "scan.png"), deep_photo())
    result = run_cli(tmp_path / "scan.png", "--scale", "2", "-o", tmp_path / "scan.jpg")
    assert result.returncode == 0
    assert "16-bit samples become 8-bit in JPG; name the output .png" in result.stderr
    assert read(tmp_path / "scan.jpg").dtype == np.uint8


def test_a_grey_picture_stays_grey(tmp_path):
    cv2.imwrite(str(tmp_path / "grey.png"), cv2.cvtColor(photo(), cv2.COLOR_BGR2GRAY))
    assert run_cli(tmp_path / "grey.png", "--scale", "2").returncode == 0
    assert read(tmp_path / "grey_fast_x2.png").shape == (120, 160)


def test_a_broken_picture_is_one_clear_error_and_leaves_nothing(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    result = run_cli(tmp_path / "broken.png", "--scale", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a picture OpenCV or ffmpeg can decode" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png"] and \
        leftovers(tmp_path) == []


def test_a_picture_opencv_cannot_decode_is_decoded_by_ffmpeg(ffmpeg, tmp_path):
    # JPEG 2000 with 4:2:0 colour, as ffmpeg writes it: OpenCV's OpenJPEG refuses it.
    src = tmp_path / "scan.jp2"
    subprocess.run([ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "80x60",
                    "-i", "-", "-c:v", "jpeg2000", "-pix_fmt", "yuv420p", "-frames:v", "1",
                    str(src)], input=photo().tobytes(), check=True)
    assert cv2.imread(str(src)) is None
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = read(tmp_path / "scan_cubic_x2.png")
    assert out.shape == (120, 160, 3)
    assert cv2.PSNR(out, cv2.resize(photo(), (160, 120), interpolation=cv2.INTER_CUBIC)) > 28


def test_inputs_that_would_share_an_output_are_refused_not_skipped(tmp_path):
    cv2.imwrite(str(tmp_path / "photo.bmp"), photo())
    cv2.imwrite(str(tmp_path / "photo.png"), photo())
    result = run_cli(tmp_path, "--scale", "2")
    assert result.returncode == 1 and "would be photo.bmp's too" in result.stderr
    assert read(tmp_path / "photo_fast_x2.png").shape == (120, 160, 3)


def test_a_picture_with_a_video_output_name_is_a_clear_error(tmp_path):
    cv2.imwrite(str(tmp_path / "photo.png"), photo())
    result = run_cli(tmp_path / "photo.png", "-o", tmp_path / "big.mp4")
    assert result.returncode == 1 and "-o must name a picture too" in result.stderr
    assert not (tmp_path / "big.mp4").exists()


@pytest.mark.parametrize("extension", [".png", ".jpg", ".webp", ".avif"])
def test_the_settings_tag_leaves_the_picture_readable_and_is_read_back(tmp_path, extension):
    image = photo()
    data = upscale.finished_picture(upscale.encoded_picture(image, extension), extension,
                                    "model=fast scale=2")
    (tmp_path / f"p{extension}").write_bytes(data)
    assert read(tmp_path / f"p{extension}").shape == image.shape
    assert upscale.picture_settings(tmp_path / f"p{extension}") == "model=fast scale=2"


def test_a_video_with_a_picture_output_name_is_a_clear_error(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    result = run_cli(src, "-o", tmp_path / "big.png")
    assert result.returncode == 1 and "-o must name a video too" in result.stderr
    assert not (tmp_path / "big.png").exists()


# --- Animated PNG, WebP and AVIF -----------------------------------------------------------

def animation_of(frames, durations, loops=0):
    animation = cv2.Animation()
    animation.frames, animation.durations, animation.loop_count = frames, durations, loops
    return animation


def write_animation(path, animation):
    """An animated PNG or WebP file made by OpenCV's own encoder (lossless WebP)."""
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if path.suffix == ".webp" else []
    ok, data = cv2.imencodeanimation(path.suffix, animation, params)
    assert ok
    path.write_bytes(bytes(data))


def read_animation_file(path):
    ok, animation = cv2.imdecodeanimation(np.fromfile(str(path), np.uint8).reshape(1, -1))
    assert ok, path
    return animation


def moving_frames(count=4, width=80, height=60):
    """Frames that differ: a photo sliding to the right a few pixels a frame."""
    wide = photo(width + 3 * count, height)
    return [np.ascontiguousarray(wide[:, 3 * i:3 * i + width]) for i in range(count)]


@pytest.mark.parametrize("name", ["anim.png", "anim.webp"])
def test_an_animated_picture_stays_animated_with_every_frame_upscaled_at_its_time(
        tmp_path, name):
    frames = moving_frames()
    write_animation(tmp_path / name, animation_of(frames, [40, 120, 40, 300], loops=3))
    result = run_cli(tmp_path / name, "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert "4 frames" in result.stderr
    out = read_animation_file(tmp_path / name.replace("anim", "anim_fast_x2"))
    assert list(out.durations) == [40, 120, 40, 300] and out.loop_count == 3
    method = upscale.METHODS["fast"]
    network = upscale.NetworkUpscaler(method, 2, upscale.locate_model(method, 2))
    assert len(out.frames) == 4
    for source, made in zip(frames, out.frames):
        expected = network.upscale(source)
        if name.endswith(".png"):                           # lossless: the very pixels
            assert np.array_equal(made[:, :, :3], expected)
        else:                                               # WebP at quality 95
            assert cv2.PSNR(np.ascontiguousarray(made[:, :, :3]), expected) > 35


def test_an_animated_avif_stays_animated_with_every_frame_at_its_time(tmp_path):
    # (OpenCV's AVIF encoder writes no loop count, so none is asked of it here.)
    write_animation(tmp_path / "anim.avif", animation_of(moving_frames(), [40, 120, 40, 300]))
    assert upscale.animation_frame_count((tmp_path / "anim.avif").read_bytes()) == 4
    result = run_cli(tmp_path / "anim.avif", "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = read_animation_file(tmp_path / "anim_fast_x2.avif")
    assert list(out.durations) == [40, 120, 40, 300]
    assert [f.shape[:2] for f in out.frames] == [(120, 160)] * 4


def test_a_gif_asked_for_as_an_animated_webp_keeps_its_transparency_and_times(tmp_path):
    frames = []
    for i in range(3):
        frame = np.zeros((48, 64, 4), np.uint8)
        frame[:, :, :3], frame[:, 32:, 3] = (40 * i, 200, 90), 255      # left half clear
        frames.append(frame)
    ok, data = cv2.imencodeanimation(".gif", animation_of(frames, [100, 250, 100]), [])
    (tmp_path / "sticker.gif").write_bytes(bytes(data))
    result = run_cli(tmp_path / "sticker.gif", "--scale", "2", "-o", tmp_path / "big.webp")
    assert result.returncode == 0, result.stderr
    out = read_animation_file(tmp_path / "big.webp")
    assert list(out.durations) == [100, 250, 100]
    assert [f.shape for f in out.frames] == [(96, 128, 4)] * 3
    assert out.frames[0][:, :60, 3].max() == 0 and out.frames[0][:, 68:, 3].min() == 255


def test_a_still_gif_is_a_picture_upscaled_into_a_png_keeping_its_transparency(tmp_path):
    frame = np.zeros((48, 64, 4), np.uint8)
    frame[:, :, :3], frame[:, 32:, 3] = (40, 200, 90), 255                # left half clear
    ok, data = cv2.imencodeanimation(".gif", animation_of([frame], [100]), [])
    (tmp_path / "icon.gif").write_bytes(bytes(data))
    result = run_cli(tmp_path / "icon.gif", "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = read(tmp_path / "icon_fast_x2.png")
    assert out.shape == (96, 128, 4)
    assert out[:, :60, 3].max() == 0 and out[:, 68:, 3].min() == 255
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icon.gif", "icon_fast_x2.png"]


@pytest.mark.parametrize("frames", [1, 3])
def test_a_gifs_frames_are_counted_from_its_blocks_whoever_wrote_it(ffmpeg, tmp_path, frames):
    ours = tmp_path / "opencv.gif"
    ok, data = cv2.imencodeanimation(".gif", animation_of(moving_frames(frames),
                                                          [100] * frames), [])
    ours.write_bytes(bytes(data))
    theirs = make_clip(ffmpeg, tmp_path / "ffmpeg.gif", size="64x48", rate="10",
                       seconds=frames / 10, audio=False, vcodec=("-c:v", "gif"))
    assert upscale.gif_frame_count(ours) == upscale.gif_frame_count(theirs) == frames
    assert upscale.is_picture(ours) == upscale.is_picture(theirs) == (frames == 1)


def test_a_gif_asked_for_as_a_jpeg_names_what_it_can_be(tmp_path):
    ok, data = cv2.imencodeanimation(".gif", animation_of(moving_frames(2), [100, 100]), [])
    (tmp_path / "a.gif").write_bytes(bytes(data))
    result = run_cli(tmp_path / "a.gif", "-o", tmp_path / "a.jpg")
    assert result.returncode == 1 and ".mp4" in result.stderr and ".webp" in result.stderr


def test_an_animated_webp_from_ffmpeg_is_upscaled_frame_by_frame(ffmpeg, tmp_path):
    # Made by another encoder than OpenCV's, as most animated WebP files are (lossy).
    src = make_clip(ffmpeg, tmp_path / "clip.webp", size="64x48", rate="10", seconds=0.5,
                    audio=False, vcodec=("-c:v", "libwebp_anim", "-loop", "0"))
    count = len(read_animation_file(src).frames)
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = read_animation_file(tmp_path / "clip_cubic_x2.webp")
    assert count == 5 and len(out.frames) == count
    assert out.frames[0].shape[:2] == (96, 128)
    assert list(out.durations) == [100] * count


def test_every_frame_of_an_animation_keeps_its_transparency(tmp_path):
    frames = [np.dstack([f, np.full(f.shape[:2], 60 * i + 40, np.uint8)])
              for i, f in enumerate(moving_frames(3))]
    write_animation(tmp_path / "ghost.png", animation_of(frames, [100] * 3))
    assert run_cli(tmp_path / "ghost.png", "--scale", "2").returncode == 0
    out = read_animation_file(tmp_path / "ghost_fast_x2.png")
    assert [int(f[:, :, 3].mean()) for f in out.frames] == [40, 100, 160]


def test_a_rerun_skips_an_animation_made_the_same_way(tmp_path):
    write_animation(tmp_path / "anim.webp", animation_of(moving_frames(2), [100, 100]))
    assert run_cli(tmp_path / "anim.webp", "--scale", "2").returncode == 0
    again = run_cli(tmp_path / "anim.webp", "--scale", "2")
    assert again.returncode == 0 and "skip:" in again.stderr


def test_an_animation_asked_for_as_a_jpeg_is_refused_before_any_work(tmp_path):
    write_animation(tmp_path / "anim.webp", animation_of(moving_frames(2), [100, 100]))
    result = run_cli(tmp_path / "anim.webp", "-o", tmp_path / "big.jpg")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is animated (2 frames)" in result.stderr and "name the output .webp" in \
        result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.webp"]


def test_an_animation_too_big_for_memory_is_refused_before_any_work(tmp_path):
    # 20 frames of 1024x1024 at x8: 20 GB of frames, over the 4 GB an animation may take.
    flat = [np.full((1024, 1024, 3), 12 * i, np.uint8) for i in range(20)]
    write_animation(tmp_path / "big.png", animation_of(flat, [50] * 20))
    result = run_cli(tmp_path / "big.png", "--model", "cubic", "--scale", "8")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "20 frames at 8192x8192 would take 5.0 GB" in result.stderr
    assert "--scale" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


def test_an_animation_with_no_size_asked_gets_a_scale_its_frames_fit_in_memory(
        tmp_path, monkeypatch):
    write_animation(tmp_path / "anim.png", animation_of(moving_frames(4), [100] * 4))
    monkeypatch.setattr(upscale, "ANIMATION_MEMORY", 600_000)   # x2's 4 frames fit, x3's not
    args = upscale.build_parser().parse_args([str(tmp_path / "anim.png"), "--quiet"])
    job = upscale.prepare_picture(tmp_path / "anim.png", upscale.settings_from_args(args))
    assert job.plan.label == "x2" and "for its 4 frames" in job.plan.why


def test_the_frame_count_of_animated_and_still_pictures(tmp_path):
    frames = moving_frames(3)
    for extension in (".png", ".webp", ".avif"):
        write_animation(tmp_path / f"a{extension}", animation_of(frames, [100] * 3))
        cv2.imwrite(str(tmp_path / f"s{extension}"), frames[0])
        assert upscale.animation_frame_count((tmp_path / f"a{extension}").read_bytes()) == 3
        assert upscale.animation_frame_count((tmp_path / f"s{extension}").read_bytes()) == 1
    cv2.imwrite(str(tmp_path / "s.jpg"), frames[0])
    assert upscale.animation_frame_count((tmp_path / "s.jpg").read_bytes()) == 1


def test_an_mp4_is_not_taken_for_an_animated_picture(ffmpeg, tmp_path):
    clip = make_clip(ffmpeg, tmp_path / "c.mp4", seconds=0.2, audio=False)
    assert upscale.animation_frame_count(clip.read_bytes()) == 1


# --- Colour profiles (ICC) ------------------------------------------------------------------

def icc_profile(space=b"RGB ", size=600, seed=1):
    """Bytes shaped like an ICC profile (its header says size and colour space), the rest
    arbitrary: the tool copies a profile and never interprets it beyond its header."""
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", space, b"XYZ ")
    header = header.ljust(36, b"\0") + b"acsp"
    body = np.random.default_rng(seed).integers(0, 256, size - 128 - 4, np.uint8).tobytes()
    return header.ljust(128, b"\0") + struct.pack(">I", 0) + body


def png_with_profile(png, profile):
    body = b"sRGB IEC61966-2.1\0\0" + zlib.compress(profile)     # iCCP: name, method, data
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + \
        struct.pack(">I", zlib.crc32(b"iCCP" + body))
    return png[:33] + chunk + png[33:]


def jpeg_with_profile(jpeg, profile):
    """APP2 segments right after SOI, 60,000 bytes of profile each, numbered from 1."""
    pieces = [profile[i:i + 60000] for i in range(0, len(profile), 60000)]
    segments = b"".join(b"\xff\xe2" + struct.pack(">H", 16 + len(p)) + b"ICC_PROFILE\0" +
                        bytes([i + 1, len(pieces)]) + p for i, p in enumerate(pieces))
    return jpeg[:2] + segments + jpeg[2:]


def tiff_with_profile(tiff, profile):
    """A little-endian TIFF with tag 34675 added: the profile and a new first directory
    (the old one's entries and the new one, in tag order) appended."""
    first = struct.unpack("<I", tiff[4:8])[0]
    count = struct.unpack("<H", tiff[first:first + 2])[0]
    entries = [tiff[first + 2 + 12 * i:first + 14 + 12 * i] for i in range(count)]
    following = tiff[first + 2 + 12 * count:first + 6 + 12 * count]
    tiff += b"\0" * (len(tiff) % 2)
    entries.append(struct.pack("<HHII", 34675, 7, len(profile), len(tiff)))
    tiff += profile + b"\0" * (len(profile) % 2)
    directory = struct.pack("<H", len(entries)) + b"".join(sorted(entries)) + following
    return tiff[:4] + struct.pack("<I", len(tiff)) + tiff[8:] + directory


def profile_ffmpeg_reads(ffmpeg, path):
    """The size of the ICC profile ffmpeg's own decoder finds in a picture; None if none."""
    log = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path), "-vf", "showinfo", "-f",
                          "null", "-"], capture_output=True, text=True).stderr
    found = re.search(r"side data - ICC profile: \((\d+) bytes\)", log)
    return int(found.group(1)) if found else None


@pytest.mark.parametrize("source,output", [("p.jpg", "p_fast_x2.jpg"),
                                           ("p.png", "p_fast_x2.png"),
                                           ("p.tif", "p_fast_x2.png")])
def test_a_pictures_colour_profile_is_kept_in_its_output(ffmpeg, tmp_path, source, output):
    profile = icc_profile()
    ok, data = cv2.imencode(source[1:], photo())
    embed = {"p.jpg": jpeg_with_profile, "p.png": png_with_profile,
             "p.tif": tiff_with_profile}[source]
    (tmp_path / source).write_bytes(embed(bytes(data), profile))
    assert upscale.icc_profile((tmp_path / source).read_bytes()) == profile
    result = run_cli(tmp_path / source, "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert upscale.icc_profile((tmp_path / output).read_bytes()) == profile
    assert profile_ffmpeg_reads(ffmpeg, tmp_path / output) == len(profile)
    assert read(tmp_path / output).shape == (120, 160, 3)


def test_a_colour_profile_goes_into_a_webp_output_which_stays_readable(ffmpeg, tmp_path):
    profile = icc_profile()
    ok, data = cv2.imencode(".jpg", photo())
    (tmp_path / "p.jpg").write_bytes(jpeg_with_profile(bytes(data), profile))
    result = run_cli(tmp_path / "p.jpg", "--scale", "2", "-o", tmp_path / "big.webp")
    assert result.returncode == 0, result.stderr
    assert profile_ffmpeg_reads(ffmpeg, tmp_path / "big.webp") == len(profile)
    data = (tmp_path / "big.webp").read_bytes()
    assert upscale.icc_profile(data) == profile
    assert data[12:16] == b"VP8X" and data[20] & 0x20    # the flag browsers look for first
    assert read(tmp_path / "big.webp").shape == (120, 160, 3)
    again = run_cli(tmp_path / "p.jpg", "--scale", "2", "-o", tmp_path / "big.webp")
    assert again.returncode == 0 and "skip:" in again.stderr     # its settings read back


def test_a_colour_profile_over_64_kb_is_kept_whole_in_a_jpeg(ffmpeg, tmp_path):
    profile = icc_profile(size=150_000)                  # three APP2 segments each way
    ok, data = cv2.imencode(".jpg", photo())
    (tmp_path / "p.jpg").write_bytes(jpeg_with_profile(bytes(data), profile))
    assert run_cli(tmp_path / "p.jpg", "--scale", "2").returncode == 0
    assert upscale.icc_profile((tmp_path / "p_fast_x2.jpg").read_bytes()) == profile
    assert profile_ffmpeg_reads(ffmpeg, tmp_path / "p_fast_x2.jpg") == len(profile)


def test_an_animations_colour_profile_is_kept(tmp_path):
    profile = icc_profile()
    ok, data = cv2.imencodeanimation(".png", animation_of(moving_frames(2), [100, 100]), [])
    (tmp_path / "anim.png").write_bytes(png_with_profile(bytes(data), profile))
    assert run_cli(tmp_path / "anim.png", "--scale", "2").returncode == 0
    out = (tmp_path / "anim_fast_x2.png").read_bytes()
    assert upscale.icc_profile(out) == profile and upscale.animation_frame_count(out) == 2


def test_a_grey_pictures_grey_profile_is_kept_and_a_colour_one_is_dropped_with_a_note(
        tmp_path):
    ok, data = cv2.imencode(".png", cv2.cvtColor(photo(), cv2.COLOR_BGR2GRAY))
    (tmp_path / "g.png").write_bytes(png_with_profile(bytes(data), icc_profile(b"GRAY")))
    (tmp_path / "c.png").write_bytes(png_with_profile(bytes(data), icc_profile(b"RGB ")))
    result = run_cli(tmp_path / "g.png", tmp_path / "c.png", "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert upscale.icc_profile((tmp_path / "g_fast_x2.png").read_bytes()) == \
        icc_profile(b"GRAY")
    assert upscale.icc_profile((tmp_path / "c_fast_x2.png").read_bytes()) is None
    assert "c.png: its RGB colour profile is not kept" in result.stderr
    assert "g.png: its" not in result.stderr


def test_an_avif_output_keeps_the_colour_profile_and_decodes_as_before(ffmpeg, tmp_path):
    ok, data = cv2.imencode(".png", photo())
    (tmp_path / "p.png").write_bytes(png_with_profile(bytes(data), icc_profile()))
    result = run_cli(tmp_path / "p.png", "--scale", "2", "-o", tmp_path / "big.avif")
    assert result.returncode == 0, result.stderr
    assert "cannot be kept" not in result.stderr
    out = (tmp_path / "big.avif").read_bytes()
    assert upscale.icc_profile(out) == icc_profile()
    # OpenCV (libavif) and ffmpeg still read it, to the same pixels as without the profile.
    (tmp_path / "q.png").write_bytes(bytes(data))                   # no profile
    assert run_cli(tmp_path / "q.png", "--scale", "2", "-o", tmp_path / "plain.avif"
                   ).returncode == 0
    assert upscale.icc_profile((tmp_path / "plain.avif").read_bytes()) is None
    assert np.array_equal(read(tmp_path / "big.avif"), read(tmp_path / "plain.avif"))
    subprocess.run([ffmpeg, "-v", "error", "-i", str(tmp_path / "big.avif"), "-f", "null",
                    "-"], check=True)


def test_an_animated_avif_output_says_it_does_not_keep_the_colour_profile(tmp_path):
    ok, data = cv2.imencodeanimation(".png", animation_of(moving_frames(2), [100, 100]), [])
    (tmp_path / "anim.png").write_bytes(png_with_profile(bytes(data), icc_profile()))
    result = run_cli(tmp_path / "anim.png", "--scale", "2", "-o", tmp_path / "anim.avif")
    assert result.returncode == 0, result.stderr
    assert "its colour profile cannot be kept in an animated AVIF" in result.stderr


def test_a_cmyk_profile_is_not_written_over_rgb_pixels():
    assert upscale.kept_profile(jpeg_with_profile(b"\xff\xd8\xff\xd9", icc_profile(b"CMYK")),
                                gray=False) == (None, ("its CMYK colour profile is not kept",))


def test_a_damaged_profile_is_no_profile():
    png = png_with_profile(cv2.imencode(".png", photo())[1].tobytes(), icc_profile())
    broken = png.replace(b"sRGB IEC61966-2.1\0\0x", b"sRGB IEC61966-2.1\0\0!")
    assert upscale.icc_profile(broken) is None


# --- HEIC (read through ffmpeg) -------------------------------------------------------------

def box(kind, body, version=None, flags=0):
    """An ISO media box; a full box when it has a version."""
    if version is not None:
        body = bytes([version]) + flags.to_bytes(3, "big") + body
    return struct.pack(">I", 8 + len(body)) + kind + body


def hevc_units(ffmpeg, image):
    """The NAL units of one libx265 intra frame of image (BGR)."""
    h, w = image.shape[:2]
    stream = subprocess.run(
        [ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
         "-i", "-", "-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt",
         "yuv420p", "-f", "hevc", "-"], input=image.tobytes(), capture_output=True,
        check=True).stdout
    units = (u.rstrip(b"\0") for u in stream.split(b"\0\0\1"))
    return [u for u in units if u]


def heic_file(ffmpeg, path, image, tile=64, rotation=0, profile=None, exif=None):
    """A HEIC file as phones write them: image (its sides multiples of 2) cut into tiles of
    HEVC pictures joined by a grid item, rotated by rotation quarter turns (irot), with an
    ICC profile (colr) and an EXIF item if they are given."""
    h, w = image.shape[:2]
    rows, cols = -(-h // tile), -(-w // tile)
    padded = cv2.copyMakeBorder(image, 0, rows * tile - h, 0, cols * tile - w,
                                cv2.BORDER_REPLICATE)
    tiles = [hevc_units(ffmpeg, np.ascontiguousarray(
        padded[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]))
        for r in range(rows) for c in range(cols)]
    kind = {(u[0] >> 1) & 0x3F: u for u in tiles[0]}              # VPS 32, SPS 33, PPS 34
    hvcc = bytes([1]) + kind[33][3:15] + struct.pack(">HBBBBHB", 0xF000, 0xFC, 0xFD, 0xF8,
                                                     0xF8, 0, 0x0F) + bytes([3])
    hvcc += b"".join(bytes([0x80 | t]) + struct.pack(">HH", 1, len(kind[t])) + kind[t]
                     for t in (32, 33, 34))
    datas = [b"".join(struct.pack(">I", len(u)) + u for u in units if (u[0] >> 1) & 0x3F < 32)
             for units in tiles]
    datas.append(bytes([0, 0, rows - 1, cols - 1]) + struct.pack(">HH", w, h))
    if exif:                               # its header's offset, then "Exif\0\0", then TIFF
        datas.append(struct.pack(">I", 6) + b"Exif\0\0" + exif)
    n, grid = len(tiles), len(tiles) + 1
    properties = box(b"hvcC", hvcc) + box(b"ispe", struct.pack(">II", tile, tile), 0) + \
        box(b"ispe", struct.pack(">II", w, h), 0) + \
        box(b"irot", bytes([rotation])) + box(b"colr", b"prof" + (profile or b""))
    grid_properties = [3] + [4] * bool(rotation) + [5] * bool(profile)
    ipma = struct.pack(">I", n + 1) + b"".join(struct.pack(">HBBB", i, 2, 0x81, 0x02)
                                               for i in range(1, n + 1))
    ipma += struct.pack(">HB", grid, len(grid_properties)) + bytes(grid_properties)
    infe = [box(b"infe", struct.pack(">HH", i, 0) + b"hvc1\0", 2, flags=1)
            for i in range(1, n + 1)] + [box(b"infe", struct.pack(">HH", grid, 0) + b"grid\0", 2)]
    infe += [box(b"infe", struct.pack(">HH", grid + 1, 0) + b"Exif\0", 2)] if exif else []

    def meta(data_at):
        extents, at = b"", data_at
        for i, data in enumerate(datas, 1):
            extents += struct.pack(">HHHII", i, 0, 1, at, len(data))
            at += len(data)
        return box(b"meta", box(b"hdlr", b"\0" * 4 + b"pict" + b"\0" * 13, 0) +
                   box(b"pitm", struct.pack(">H", grid), 0) +
                   box(b"iloc", struct.pack(">BBH", 0x44, 0, len(datas)) + extents, 0) +
                   box(b"iinf", struct.pack(">H", len(infe)) + b"".join(infe), 0) +
                   box(b"iref", box(b"dimg", struct.pack(">HH", grid, n) + b"".join(
                       struct.pack(">H", i) for i in range(1, n + 1))), 0) +
                   box(b"iprp", box(b"ipco", properties) + box(b"ipma", ipma, 0)), 0)

    ftyp = box(b"ftyp", b"heic\0\0\0\0mif1heic")
    head = len(ftyp) + len(meta(0)) + 8
    path.write_bytes(ftyp + meta(head) + box(b"mdat", b"".join(datas)))
    return path


def test_a_heic_photo_of_tiles_is_upscaled_whole_into_a_jpeg(ffmpeg, tmp_path):
    image = photo(200, 136)                      # 4 x 3 tiles of 64, the last ones cut
    heic_file(ffmpeg, tmp_path / "IMG_0001.HEIC", image)
    result = run_cli(tmp_path / "IMG_0001.HEIC", "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = read(tmp_path / "IMG_0001_fast_x2.jpg")
    method = upscale.METHODS["fast"]
    expected = upscale.NetworkUpscaler(method, 2, upscale.locate_model(method, 2)).upscale(image)
    assert out.shape == (272, 400, 3) and cv2.PSNR(out, expected) > 30


def test_a_heic_photos_rotation_is_applied_as_phones_show_it(ffmpeg, tmp_path):
    image = photo(200, 136)
    heic_file(ffmpeg, tmp_path / "turned.heic", image, rotation=1)      # 90 degrees, anticlockwise
    assert run_cli(tmp_path / "turned.heic", "--model", "cubic", "--scale", "2").returncode == 0
    out = read(tmp_path / "turned_cubic_x2.jpg")
    expected = cv2.resize(cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE), (272, 400),
                          interpolation=cv2.INTER_CUBIC)
    assert out.shape == (400, 272, 3) and cv2.PSNR(out, expected) > 30


@pytest.mark.parametrize("rotation,turn", [(0, None), (1, cv2.ROTATE_90_COUNTERCLOCKWISE),
                                           (2, cv2.ROTATE_180)])
def test_a_heic_photo_of_odd_width_and_height_keeps_every_row_and_column(
        ffmpeg, tmp_path, rotation, turn):
    # (ffmpeg's own joining of the tiles crops a 4:2:0 picture to even sides: 200x136)
    image = photo(201, 137)
    heic_file(ffmpeg, tmp_path / "crop.heic", image, rotation=rotation)
    result = run_cli(tmp_path / "crop.heic", "--model", "cubic", "--scale", "2", "-o",
                     tmp_path / "crop.png")
    assert result.returncode == 0, result.stderr
    shown = image if turn is None else cv2.rotate(image, turn)
    out = read(tmp_path / "crop.png")
    assert out.shape == (shown.shape[0] * 2, shown.shape[1] * 2, 3)
    back = cv2.resize(out, shown.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert cv2.PSNR(back, shown) > 30
    # The last column and row are the picture's own, not a copy of the ones before.
    assert np.abs(back[:, -1].astype(int) - shown[:, -1]).mean() < 6
    assert np.abs(back[-1].astype(int) - shown[-1]).mean() < 6


def test_a_heic_photos_colour_profile_is_kept(ffmpeg, tmp_path):
    heic_file(ffmpeg, tmp_path / "p3.heic", photo(128, 64), profile=icc_profile())
    assert run_cli(tmp_path / "p3.heic", "--scale", "2").returncode == 0
    assert upscale.icc_profile((tmp_path / "p3_fast_x2.jpg").read_bytes()) == icc_profile()


def test_a_heic_ffmpeg_cannot_decode_is_one_clear_error(tmp_path):
    (tmp_path / "broken.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64)
    result = run_cli(tmp_path / "broken.heic", "--scale", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a picture this ffmpeg can decode" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.heic"]


# --- EXIF -------------------------------------------------------------------------------------

DATE_TAKEN = b"2024:05:01 10:30:00\0"


def exif_block(orientation, width, height):
    """A little-endian EXIF block as cameras write one: the orientation, then the Exif
    directory (date taken, pixel width as LONG and height as SHORT), then a thumbnail's."""
    def directory(entries, following):
        return struct.pack("<H", len(entries)) + b"".join(
            struct.pack("<HHI", tag, kind, 1 if kind != 2 else 20) + value
            for tag, kind, value in entries) + struct.pack("<I", following)
    first = directory([(0x0112, 3, struct.pack("<HH", orientation, 0)),
                       (0x8769, 4, struct.pack("<I", 38))], 100)
    details = directory([(0x9003, 2, struct.pack("<I", 80)),
                         (0xA002, 4, struct.pack("<I", width)),
                         (0xA003, 3, struct.pack("<HH", height, 0))], 0)
    thumbnail = directory([(0x0103, 3, struct.pack("<HH", 6, 0))], 0)
    return b"II*\0" + struct.pack("<I", 8) + first + details + DATE_TAKEN + thumbnail


def exif_value(block, directory_at, tag):
    """(type, the 4 value bytes) of a tag in a little-endian EXIF directory."""
    count = struct.unpack("<H", block[directory_at:directory_at + 2])[0]
    for i in range(count):
        entry = block[directory_at + 2 + 12 * i:directory_at + 14 + 12 * i]
        if struct.unpack("<H", entry[:2])[0] == tag:
            return struct.unpack("<H", entry[2:4])[0], entry[8:12]
    return None


def photo_with_exif(path, orientation=6):
    ok, jpeg = cv2.imencode(".jpg", photo(80, 60))
    block = exif_block(orientation, 80, 60)
    path.write_bytes(jpeg[:2].tobytes() + b"\xff\xe1" + struct.pack(">H", len(block) + 8) +
                     b"Exif\0\0" + block + jpeg[2:].tobytes())
    return path


@pytest.mark.parametrize("output", ["big.jpg", "big.png", "big.webp", "big.avif"])
def test_exif_is_kept_with_its_orientation_applied_and_its_size_the_outputs(tmp_path, output):
    photo_with_exif(tmp_path / "cam.jpg", orientation=6)                 # 90 degrees cw
    result = run_cli(tmp_path / "cam.jpg", "--scale", "2", "-o", tmp_path / output)
    assert result.returncode == 0, result.stderr
    block = upscale.exif_of((tmp_path / output).read_bytes())
    assert block is not None and DATE_TAKEN in block
    assert exif_value(block, 8, 0x0112) == (3, struct.pack("<HH", 1, 0))
    assert exif_value(block, 38, 0xA002) == (4, struct.pack("<I", 120))
    assert exif_value(block, 38, 0xA003) == (3, struct.pack("<HH", 160, 0))
    assert block[34:38] == b"\0\0\0\0"                # no thumbnail of the old picture
    assert read(tmp_path / output).shape[:2] == (160, 120)      # not turned a second time
    if output.endswith(".jpg"):                 # first after JFIF, where readers look
        markers = [m for m, _ in upscale.jpeg_segments((tmp_path / output).read_bytes())]
        assert markers[:2] == [0xE0, 0xE1]


def test_a_webp_output_says_it_holds_exif(tmp_path):
    photo_with_exif(tmp_path / "cam.jpg")
    assert run_cli(tmp_path / "cam.jpg", "--scale", "2", "-o", tmp_path / "big.webp"
                   ).returncode == 0
    data = (tmp_path / "big.webp").read_bytes()
    assert data[12:16] == b"VP8X" and data[20] & 0x08


def test_exif_is_read_from_png_and_webp_sources_too(tmp_path):
    block = exif_block(1, 80, 60)
    ok, png = cv2.imencode(".png", photo())
    png = png.tobytes()
    chunk = struct.pack(">I", len(block)) + b"eXIf" + block + \
        struct.pack(">I", zlib.crc32(b"eXIf" + block))
    assert upscale.exif_of(png[:33] + chunk + png[33:]) == block
    ok, webp = cv2.imencode(".webp", photo())
    webp = upscale.with_exif(webp.tobytes(), ".webp", block)
    assert upscale.exif_of(webp) == block and read_webp_bytes(tmp_path, webp).shape[0] == 60


def read_webp_bytes(tmp_path, data):
    (tmp_path / "x.webp").write_bytes(data)
    return read(tmp_path / "x.webp")


def test_a_damaged_exif_block_is_left_out_rather_than_written_broken():
    block = exif_block(6, 80, 60)
    assert upscale.exif_for_output(block[:20], 160, 120) is None


def test_a_heic_photos_exif_is_kept_with_its_rotation_applied(ffmpeg, tmp_path):
    heic_file(ffmpeg, tmp_path / "IMG.heic", photo(128, 64), rotation=3,
              exif=exif_block(6, 128, 64))                 # 90 degrees clockwise, both ways
    assert run_cli(tmp_path / "IMG.heic", "--scale", "2").returncode == 0
    block = upscale.exif_of((tmp_path / "IMG_fast_x2.jpg").read_bytes())
    assert block is not None and DATE_TAKEN in block
    assert exif_value(block, 8, 0x0112) == (3, struct.pack("<HH", 1, 0))
    assert read(tmp_path / "IMG_fast_x2.jpg").shape[:2] == (256, 128)


def test_a_photo_too_big_for_4k_gets_the_largest_scale_within_50_megapixels(tmp_path):
    cv2.imwrite(str(tmp_path / "camera.jpg"), cv2.resize(photo(), (3000, 2000)))
    result = run_cli(tmp_path / "camera.jpg", "--model", "cubic")
    assert result.returncode == 0, result.stderr
    assert "x2, to stay within 50 megapixels" in result.stderr
    assert read(tmp_path / "camera_cubic_x2.jpg").shape == (4000, 6000, 3)


def test_a_photo_over_50_megapixels_at_x2_needs_a_size_said(tmp_path):
    cv2.imwrite(str(tmp_path / "huge.jpg"), cv2.resize(photo(), (6000, 4000)))
    result = run_cli(tmp_path / "huge.jpg", "--model", "cubic")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is already 6000x4000: even x2 would not stay within 50 megapixels" in \
        result.stderr
    assert "--scale 1.5" in result.stderr
