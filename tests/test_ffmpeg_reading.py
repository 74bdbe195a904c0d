"""Videos OpenCV's decoder cannot read (AV1) or spoils (interlaced) are read through ffmpeg,
on OpenCV's own timeline, and upscaled like any other."""
import subprocess

import cv2
import numpy as np
import pytest

import upscale
from conftest import (cli_env, decoded_frame_count, make_clip, packet_times, probe, run_cli,
                      video_size)
from test_fidelity import every_ffmpeg_here

AV1 = ("-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "yuv420p")
INTERLACED = ("-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts", "tff=1")
WEAVE = "tinterlace=mode=interleave_top"


def gray_frames(ffmpeg, path, width, height, vfilter="null", input_args=None):
    """Every frame as ffmpeg (as a player) decodes it, in grey, as floats."""
    out = subprocess.run([ffmpeg, "-v", "error", *(input_args or ("-i", str(path))), "-map",
                          "0:v:0", "-vf", vfilter, "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width).astype(float)


def interlaced_stripes(ffmpeg, path):
    """A PAL-like interlaced H.264 stream in MPEG-TS, with sound, whose picture is vertical
    stripes moving sideways: each woven frame's two fields differ, so its rows alternate."""
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                    "nullsrc=s=128x96:r=50:d=0.4,geq=lum='128+90*sin((X-6*N)/5)':cb=128:cr=128",
                    "-f", "lavfi", "-i", "sine=d=0.4", "-map", "0:v", "-map", "1:a",
                    "-vf", WEAVE, *INTERLACED, "-pix_fmt", "yuv420p", "-c:a", "mp2",
                    str(path)], check=True)
    return path


def row_to_row(frames):
    """How much a frame's rows differ from the row above, on average."""
    return float(np.abs(np.diff(frames, axis=1)).mean())


def read_all(capture):
    try:
        return list(upscale.read_frames(capture))
    finally:
        capture.release()


def test_ffmpeg_reads_opencvs_frames_at_opencvs_times(ffmpeg, tmp_path):
    # NTSC rate, B-frames, and a video that starts half a second after its sound.
    src = tmp_path / "late.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-itsoffset", "0.5", "-f", "lavfi", "-i",
                    "testsrc2=s=96x64:r=30000/1001:d=1.5", "-f", "lavfi", "-i", "sine=d=2",
                    "-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(src)], check=True)
    info = probe(ffmpeg, src)
    by_ffmpeg = upscale.frame_reader(ffmpeg, src, info)
    assert isinstance(by_ffmpeg, upscale.OpenCVReader)      # OpenCV reads this one itself
    start = upscale.video_start(upscale.first_packet_times(ffmpeg, src, 0))
    assert start > 0.4
    by_ffmpeg = upscale.FfmpegReader(ffmpeg, src, 0, start, "")
    opencv, piped = read_all(upscale.OpenCVReader(src).open()), read_all(by_ffmpeg.open())
    assert len(piped) == len(opencv) == 45
    assert [t for _, t in piped] == pytest.approx([t for _, t in opencv], abs=0.01)
    assert max(np.abs(a.astype(int) - b).mean() for (a, _), (b, _) in zip(opencv, piped)) < 1


def test_a_seek_lands_where_opencvs_does(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "film.mkv", size="64x48", seconds=3, audio=False,
                    vcodec=("-c:v", "libx264", "-g", "12"))
    piped = upscale.FfmpegReader(ffmpeg, src, 0, 0.0, "").open()
    opencv = upscale.OpenCVReader(src).open()
    try:
        for ms in (1000.0, 2200.0):
            firsts = []
            for capture in (opencv, piped):
                capture.set(cv2.CAP_PROP_POS_MSEC, ms)
                firsts.append(next(upscale.read_frames(capture)))
            (a, ta), (b, tb) = firsts
            assert tb == pytest.approx(ta, abs=0.01) and ta == pytest.approx(ms, abs=40)
            assert np.abs(a.astype(int) - b).mean() < 1
    finally:
        opencv.release()
        piped.release()


def test_ffmpeg_reads_every_frame_across_a_change_of_picture_size(ffmpeg, tmp_path):
    # Two streams of different sizes joined, as a TV recording switches; ffmpeg brings the
    # later frames to the first size, as OpenCV does.
    parts = [make_clip(ffmpeg, tmp_path / f"{size}.ts", size=size, seconds=0.4, audio=False)
             for size in ("96x64", "128x96")]
    src = tmp_path / "joined.ts"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    opencv = read_all(upscale.OpenCVReader(src).open())
    piped = read_all(upscale.FfmpegReader(ffmpeg, src, 0, 0.0, "", deinterlace=False).open())
    assert len(piped) == len(opencv) == 20
    assert {f.shape for f, _ in piped} == {(64, 96, 3)}


def test_av1_is_upscaled_frame_for_frame_with_its_sound(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mkv", size="64x48", seconds=0.6, vcodec=AV1,
                    acodec=("-c:a", "flac"))
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    # (OpenCV 5.0's wheels have no AV1 decoder; some other builds do)
    assert ("decoded by ffmpeg" in result.stderr) == (not upscale.opencv_decodes(src))
    reader = upscale.frame_reader(ffmpeg, src, probe(ffmpeg, src))
    assert isinstance(reader, upscale.OpenCVReader) or not reader.deinterlace    # not needed
    out = tmp_path / "clip_cubic_x2.mp4"
    assert len(probe(ffmpeg, out).of_kind("audio")) == 1
    assert packet_times(ffmpeg, out) == packet_times(ffmpeg, src)
    before = gray_frames(ffmpeg, src, 64, 48)
    after = gray_frames(ffmpeg, out, 128, 96)
    expected = np.array([cv2.resize(f, (128, 96), interpolation=cv2.INTER_CUBIC)
                         for f in before])
    assert len(after) == len(before) == 15
    assert np.abs(after - expected).mean() < 3         # the same pictures, in order


def test_av1_in_segments_keeps_every_frame_once(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mkv", size="64x48", seconds=2.4, audio=False,
                    vcodec=AV1 + ("-g", "12"))
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--segment", "0.5")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "clip_cubic_x2.mp4"
    assert packet_times(ffmpeg, out) == packet_times(ffmpeg, src)
    before = gray_frames(ffmpeg, src, 64, 48).reshape(60, -1).mean(1)
    after = gray_frames(ffmpeg, out, 128, 96).reshape(60, -1).mean(1)
    assert np.abs(after - before).max() < 2            # none dropped, doubled or shifted


@pytest.mark.parametrize("flags", [("-display_hflip",),
                                   ("-display_rotation", "90", "-display_hflip")])
@pytest.mark.parametrize("kind", ["av1", "interlaced"])
def test_turned_and_mirrored_video_read_by_ffmpeg_comes_out_as_a_player_shows_it(
        ffmpeg, tmp_path, flags, kind):
    plain = make_clip(ffmpeg, tmp_path / "plain.mp4", size="64x48", seconds=0.2, audio=False,
                      vcodec=AV1 if kind == "av1" else INTERLACED + ("-pix_fmt", "yuv420p"),
                      vfilter=None if kind == "av1" else WEAVE)
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg, "-v", "error", *flags, "-i", str(plain), "-c", "copy", str(turned)],
                   check=True)
    result = run_cli(turned, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    w, h = (48, 64) if "90" in flags else (64, 48)
    shown = gray_frames(ffmpeg, turned, w, h, upscale.DEINTERLACING["frame"].filter)[0]
    out = gray_frames(ffmpeg, tmp_path / "turned_cubic_x2.mp4", 2 * w, 2 * h)[0]
    assert np.abs(cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA) - shown).mean() < 8


@pytest.mark.parametrize("tool_ffmpeg", every_ffmpeg_here())
def test_interlaced_video_is_deinterlaced_one_frame_for_each(ffmpeg, tmp_path, tool_ffmpeg):
    src = interlaced_stripes(ffmpeg, tmp_path / "tv.ts")
    result = run_cli(src, "--scale", "2", env=cli_env(UPSCALE_FFMPEG=str(tool_ffmpeg)))
    assert result.returncode == 0, result.stderr
    assert "deinterlaced" in result.stderr
    assert upscale.frame_reader(ffmpeg, src, probe(ffmpeg, src)).deinterlace
    out = tmp_path / "tv_fast_x2.mp4"
    woven, made = gray_frames(ffmpeg, src, 128, 96), gray_frames(ffmpeg, out, 256, 192)
    assert len(made) == len(woven) == decoded_frame_count(ffmpeg, src) == 10
    assert row_to_row(woven) > 30                     # the fields, woven, alternate
    assert row_to_row(made) < 2                       # one picture: no combing left
    assert made.mean() == pytest.approx(woven.mean(), abs=4)     # and not black
    assert len(probe(ffmpeg, out).of_kind("audio")) == 1
    assert video_size(out) == (256, 192)


def test_the_ffmpeg_baseline_deinterlaces_as_the_networks_do(ffmpeg, tmp_path):
    src = interlaced_stripes(ffmpeg, tmp_path / "tv.ts")
    result = run_cli(src, "--model", "ffmpeg", "--scale", "2")
    assert result.returncode == 0, result.stderr
    made = gray_frames(ffmpeg, tmp_path / "tv_ffmpeg_x2.mp4", 256, 192)
    assert len(made) == 10 and row_to_row(made) < 2


def field_pictures(count, width=128, height=96):
    """What interlaced_stripes filmed at each field: its stripes 6 pixels further along."""
    x = np.arange(width, dtype=float)
    return [np.tile(128 + 90 * np.sin((x - 6 * n) / 5), (height, 1)) for n in range(count)]


def nearest_field(frame, fields):
    """The index of the field picture a (downscaled) frame is closest to."""
    return int(np.argmin([np.abs(frame - f).mean() for f in fields]))


@pytest.mark.parametrize("tool_ffmpeg", every_ffmpeg_here())
def test_per_field_deinterlacing_makes_a_frame_of_each_field_at_its_time(
        ffmpeg, tmp_path, tool_ffmpeg):
    # 50i from a camcorder: each field is its own moment; a frame per frame halves the motion.
    src = interlaced_stripes(ffmpeg, tmp_path / "tv.ts")
    result = run_cli(src, "--scale", "2", "--deinterlace", "field",
                     env=cli_env(UPSCALE_FFMPEG=str(tool_ffmpeg)))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "tv_fast_x2.mp4"
    made = gray_frames(ffmpeg, out, 256, 192)
    assert len(made) == 2 * decoded_frame_count(ffmpeg, src) == 20
    assert row_to_row(made) < 2
    small = [cv2.resize(f, (128, 96), interpolation=cv2.INTER_AREA) for f in made]
    fields = field_pictures(20)
    assert [nearest_field(f, fields) for f in small] == list(range(20))
    times = sorted(float(t) for t in packet_times(ffmpeg, out))
    assert times == pytest.approx([0.02 * n for n in range(20)], abs=1e-3)
    assert len(probe(ffmpeg, out).of_kind("audio")) == 1


def test_per_field_deinterlacing_in_segments_keeps_every_field_once(ffmpeg, tmp_path):
    src = tmp_path / "tv.ts"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                    "nullsrc=s=128x96:r=50:d=1.6,geq=lum='128+90*sin((X-6*N)/5)':cb=128:cr=128",
                    "-vf", WEAVE, *INTERLACED, "-pix_fmt", "yuv420p", "-g", "5", str(src)],
                   check=True)
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--deinterlace", "field",
                     "--segment", "0.5")
    assert result.returncode == 0, result.stderr
    made = gray_frames(ffmpeg, tmp_path / "tv_cubic_x2.mp4", 256, 192)
    small = [cv2.resize(f, (128, 96), interpolation=cv2.INTER_AREA) for f in made]
    assert [nearest_field(f, field_pictures(80)) for f in small] == list(range(80))


def test_the_ffmpeg_baseline_deinterlaces_per_field_when_asked(ffmpeg, tmp_path):
    src = interlaced_stripes(ffmpeg, tmp_path / "tv.ts")
    result = run_cli(src, "--model", "ffmpeg", "--scale", "2", "--deinterlace", "field")
    assert result.returncode == 0, result.stderr
    made = gray_frames(ffmpeg, tmp_path / "tv_ffmpeg_x2.mp4", 256, 192)
    assert len(made) == 20 and row_to_row(made) < 2


FILM = "nullsrc=s=160x120:r={}:d={},geq=lum='20+2*N+15*sin((X-4*N)/5)':cb=128:cr=128"


def film_clip(ffmpeg, path, seconds=2, telecine=True, rate="24000/1001", coded="+ilme+ildct"):
    """Film for a DVD, each frame brighter than the last and its stripes moved on:
    telecined (3:2 pulldown, 29.97i, MPEG-2 coded interlaced), or its frames as they are
    with the stream's field order saying interlaced: coded progressive (as an NTSC DVD
    telecined by flags reads) or interlaced (coded="+ilme+ildct", as a PAL DVD's 2:2)."""
    vf = "telecine=first_field=top:pattern=23,setfield=tff" if telecine else "setfield=tff"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", FILM.format(rate, seconds),
                    "-vf", vf, "-c:v", "mpeg2video", "-q:v", "2",
                    *(("-flags", coded) if coded else ()), str(path)], check=True)
    return path


def film_frames_shown(ffmpeg, path, seconds=2, rate="24000/1001"):
    """Which of the film's frames each of path's frames shows (their indexes)."""
    made = gray_frames(ffmpeg, path, 320, 240)
    assert row_to_row(made) < 2                     # no combing
    film = gray_frames(ffmpeg, "lavfi", 160, 120, input_args=("-f", "lavfi", "-i",
                                                              FILM.format(rate, seconds)))
    return [nearest_field(cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA), film)
            for f in made]


@pytest.mark.parametrize("tool_ffmpeg", every_ffmpeg_here())
def test_film_deinterlacing_gives_back_a_telecined_films_own_frames(ffmpeg, tmp_path,
                                                                    tool_ffmpeg):
    src = film_clip(ffmpeg, tmp_path / "dvd.mkv")
    assert decoded_frame_count(ffmpeg, src) == 60       # 48 film frames spread over 60
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--deinterlace", "film",
                     env=cli_env(UPSCALE_FFMPEG=str(tool_ffmpeg)))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "dvd_cubic_x2.mp4"
    assert film_frames_shown(ffmpeg, out) == list(range(48))
    steps = np.diff(sorted(float(t) for t in packet_times(ffmpeg, out)))
    assert steps.min() > 0.040 and steps.max() < 0.043        # 1001/24000 s, in 1 ms


def test_a_telecined_film_read_frame_by_frame_is_told_of_film_deinterlacing(ffmpeg,
                                                                            tmp_path):
    src = film_clip(ffmpeg, tmp_path / "dvd.mkv")
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert "its fields repeat as a telecined film's do" in result.stderr
    assert "--deinterlace film gives back the film's own frames" in result.stderr
    tv = run_cli(interlaced_stripes(ffmpeg, tmp_path / "tv.ts"), "--model", "cubic",
                 "--scale", "2")
    assert tv.returncode == 0 and "telecined film's do" not in tv.stderr


def test_film_deinterlacing_reads_in_one_piece_keeping_every_frame_once(ffmpeg, tmp_path):
    # In segments, each started its own field matching and decimation: 146 frames of 144,
    # repeats at the joins.
    src = film_clip(ffmpeg, tmp_path / "dvd.mkv", seconds=6)
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--deinterlace", "film",
                     "--segment", "0.7")
    assert result.returncode == 0, result.stderr
    assert "inverse telecine reads a video in one piece" in result.stderr
    shown = film_frames_shown(ffmpeg, tmp_path / "dvd_cubic_x2.mp4", seconds=6)
    assert shown == list(range(144))


# (decimating either would drop one real frame in every five)
@pytest.mark.parametrize("method", ["cubic", "ffmpeg"])
def test_film_deinterlacing_leaves_a_film_telecined_by_flags_alone_as_it_is(ffmpeg, tmp_path,
                                                                            method):
    src = film_clip(ffmpeg, tmp_path / "dvd.mkv", telecine=False, coded="")
    result = run_cli(src, "--model", method, "--scale", "2", "--deinterlace", "film")
    assert result.returncode == 0, result.stderr
    assert method == "ffmpeg" or "coded progressive" in result.stderr
    assert film_frames_shown(ffmpeg, tmp_path / f"dvd_{method}_x2.mp4") == list(range(48))


@pytest.mark.parametrize("method", ["cubic", "ffmpeg"])
def test_film_deinterlacing_of_a_25_fps_film_matches_its_fields_dropping_none(
        ffmpeg, tmp_path, method):
    src = film_clip(ffmpeg, tmp_path / "pal.mkv", telecine=False, rate="25")
    result = run_cli(src, "--model", method, "--scale", "2", "--deinterlace", "film")
    assert result.returncode == 0, result.stderr
    assert method == "ffmpeg" or "none dropped" in result.stderr
    shown = film_frames_shown(ffmpeg, tmp_path / f"pal_{method}_x2.mp4", rate="25")
    assert shown == list(range(50))


def test_the_ffmpeg_baseline_gives_back_a_telecined_films_frames_when_asked(ffmpeg, tmp_path):
    src = film_clip(ffmpeg, tmp_path / "dvd.mkv")
    result = run_cli(src, "--model", "ffmpeg", "--scale", "2", "--deinterlace", "film")
    assert result.returncode == 0, result.stderr
    assert film_frames_shown(ffmpeg, tmp_path / "dvd_ffmpeg_x2.mp4") == list(range(48))


@pytest.mark.skipif(tuple(map(int, cv2.__version__.split(".")[:2])) >= (5, 1),
                    reason="OpenCV 5.1's FFmpeg decodes them")
def test_opencv_cannot_convert_interlaced_frames(ffmpeg, tmp_path):
    # Why interlaced video goes through ffmpeg: OpenCV's FFmpeg says so for each frame and
    # hands over a frame it did not fill (black, or whatever its buffer held). If a new
    # OpenCV decodes them, ffmpeg's reader is needed only to deinterlace them.
    src = interlaced_stripes(ffmpeg, tmp_path / "tv.ts")
    read = subprocess.run([upscale.sys.executable, "-c", "import cv2, sys; print(cv2."
                           "VideoCapture(sys.argv[1], cv2.CAP_FFMPEG).read()[0])", str(src)],
                          capture_output=True, text=True,
                          env=dict(upscale.os.environ, OPENCV_FFMPEG_LOGLEVEL="24",
                                   OPENCV_LOG_LEVEL="ERROR"))
    assert read.stdout.split()[-1] == "True"        # (OpenCV logs FFmpeg's words to stdout)
    assert "Cannot convert interlaced to progressive frames" in read.stdout + read.stderr


def test_compare_measures_interlaced_video_deinterlaced(ffmpeg, tmp_path):
    src = interlaced_stripes(ffmpeg, tmp_path / "tv.ts")
    result = run_cli("--compare", src, "--scale", "2", "--methods", "cubic",
                     "--output-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "cubic" in result.stdout


def test_where_ffmpeg_cannot_pipe_frames_av1_is_refused_with_a_conversion_that_works(
        ffmpeg, tmp_path, monkeypatch):
    # Windows gives a child no pipe but its standard streams: there, the way on is a file
    # OpenCV reads, made by the command the error gives.
    src = make_clip(ffmpeg, tmp_path / "clip.mkv", seconds=0.3, vcodec=AV1,
                    acodec=("-c:a", "flac"))
    if upscale.opencv_decodes(src):
        pytest.skip("this OpenCV decodes AV1 itself (5.0's wheels do not)")
    monkeypatch.setattr(upscale, "PIPES_TO_FFMPEG", False)
    with pytest.raises(upscale.UpscaleError, match="cannot read its av1 video") as error:
        upscale.frame_reader(ffmpeg, src, probe(ffmpeg, src))
    advice = upscale.shlex.split(str(error.value).split("upscale that: ", 1)[1])
    assert advice[0] == "ffmpeg"
    subprocess.run([ffmpeg, "-v", "error", *advice[1:]], cwd=tmp_path, check=True,
                   stdin=subprocess.DEVNULL)
    converted = tmp_path / "clip-h264.mkv"
    assert isinstance(upscale.frame_reader(ffmpeg, converted, probe(ffmpeg, converted)),
                      upscale.OpenCVReader)


def test_where_ffmpeg_cannot_pipe_frames_interlaced_video_is_refused_saying_how(
        ffmpeg, tmp_path, monkeypatch):
    src = interlaced_stripes(ffmpeg, tmp_path / "tv.ts")
    monkeypatch.setattr(upscale, "PIPES_TO_FFMPEG", False)
    with pytest.raises(upscale.UpscaleError, match=r"interlaced \(top first\).*bwdif"):
        upscale.frame_reader(ffmpeg, src, probe(ffmpeg, src))


def test_hdr_read_by_ffmpeg_keeps_its_colours_and_their_tags(ffmpeg, tmp_path):
    # ffmpeg's decoder, unlike OpenCV's, leaves HDR as it is: the frames keep the source's
    # primaries and transfer, and so must the output's tags, or players would show them as
    # SDR (washed out). (Interlaced, as it is always read by ffmpeg.)
    src = make_clip(ffmpeg, tmp_path / "hdr.ts", size="64x48", seconds=0.2, audio=False,
                    vcodec=INTERLACED, vfilter=WEAVE + ",format=yuv420p10le,setparams="
                    "colorspace=bt2020nc:color_primaries=bt2020:color_trc=smpte2084")
    result = run_cli(src, "--model", "cubic", "--scale", "2", "-o", tmp_path / "out.mkv")
    assert result.returncode == 0, result.stderr
    assert "the output is SDR" not in result.stderr
    video = probe(ffmpeg, tmp_path / "out.mkv").video[0]
    assert (video.color.get("primaries"), video.color.get("transfer")) == \
        ("bt2020", "smpte2084")
    assert video.pix_fmt == "yuv420p10le"
    before = gray_frames(ffmpeg, src, 64, 48, upscale.DEINTERLACING["frame"].filter)[0]
    after = gray_frames(ffmpeg, tmp_path / "out.mkv", 128, 96)[0]
    assert np.abs(cv2.resize(after, (64, 48), interpolation=cv2.INTER_AREA) - before).mean() < 4


def test_camcorder_dv_whose_report_does_not_say_interlaced_is_deinterlaced_not_black(
        ffmpeg, tmp_path):
    # ffmpeg's report of a DV stream names no field order, yet every DV frame is interlaced,
    # and OpenCV hands each over black. Its frames say what it is.
    src = tmp_path / "tape.dv"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=s=720x576:r=50:d=0.2", "-f", "lavfi", "-i",
                    "sine=d=0.2:sample_rate=48000", "-vf", "tinterlace=mode=interleave_bottom,"
                    "setfield=bff", "-flags", "+ildct", "-target", "pal-dv", "-pix_fmt",
                    "yuv420p", str(src)], check=True)
    assert probe(ffmpeg, src).video[0].field_order == ""
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert "deinterlaced" in result.stderr
    out = tmp_path / "tape_cubic_x2.mp4"
    before = gray_frames(ffmpeg, src, 720, 576)
    after = gray_frames(ffmpeg, out, 1536, 1152)       # 16:15 pixels made square
    assert len(after) == len(before) == 5
    assert after.mean() == pytest.approx(before.mean(), abs=3)
    assert len(probe(ffmpeg, out).of_kind("audio")) == 1


# Progressive frames, then interlaced ones, in one stream: an MPEG-2 DVD title; H.264 as a
# TV channel sends it (its film frames marked progressive by pic_struct). Each part is an
# elementary stream, then they are joined and put in the container: codec -> (the film
# part's options, the interlaced part's, ffmpeg's reader of the raw stream, the container).
TURNING = {
    "mpeg2video": ((), ("-flags", "+ildct+ilme"), "mpegvideo", "mpeg"),
    "h264": (("-bf", "0", "-x264opts", "fake-interlaced=1:pic-struct=1"),
             ("-bf", "0", "-flags", "+ildct+ilme", "-x264opts", "tff=1:pic-struct=1"), "h264",
             "mpegts"),
}


@pytest.mark.parametrize("codec", sorted(TURNING))
def test_a_stream_that_turns_interlaced_after_its_first_frames_is_read_whole(ffmpeg, tmp_path,
                                                                             codec):
    # ffmpeg's report judges by the first frames ("progressive"); OpenCV handed over each
    # later interlaced frame as a copy of the frame before.
    film, video, raw, container = TURNING[codec]
    parts = []
    for name, rate, options in (("film", "25", film), ("video", "50", ("-vf", WEAVE, *video))):
        parts.append(tmp_path / f"{name}.es")
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc2=s=96x64:r={rate}:d=0.4", "-c:v", codec, *options,
                        "-pix_fmt", "yuv420p", "-f", codec, str(parts[-1])], check=True)
    joined = tmp_path / "joined.es"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    src = tmp_path / "title.ts"
    # (quiet: the MPEG muxer warns of its buffer at every packet of these tiny frames)
    subprocess.run([ffmpeg, "-v", "quiet", "-f", raw, "-i", str(joined), "-c", "copy",
                    "-f", container, str(src)], check=True)
    assert probe(ffmpeg, src).video[0].scan == "progressive"
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    shown = gray_frames(ffmpeg, src, 96, 64, upscale.DEINTERLACING["frame"].filter)
    made = gray_frames(ffmpeg, tmp_path / "title_cubic_x2.mp4", 192, 128)
    assert len(made) == len(shown) == 20
    small = np.array([cv2.resize(f, (96, 64), interpolation=cv2.INTER_AREA) for f in made])
    assert np.abs(small - shown).mean(axis=(1, 2)).max() < 6      # every frame, none stale


MATRIX = "cqm4=" + ",".join(str(6 + 3 * i) for i in range(16))


@pytest.mark.parametrize("options,may", [
    ((), False), (("-profile:v", "baseline"), False), (("-profile:v", "main"), False),
    (("-flags", "+ildct+ilme"), True), (("-profile:v", "main", "-flags", "+ildct+ilme"), True),
    (("-x264opts", "fake-interlaced=1"), True),
    # scaling matrices of its own before the flag, in 4:4:4
    (("-pix_fmt", "yuv444p", "-x264-params", MATRIX), False),
    (("-pix_fmt", "yuv444p", "-x264-params", MATRIX, "-flags", "+ildct+ilme"), True)])
def test_an_h264_parameter_set_says_whether_frames_may_be_interlaced(ffmpeg, tmp_path, options,
                                                                     may):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2, audio=False,
                    vcodec=("-c:v", "libx264", "-pix_fmt", "yuv420p", *options))
    assert upscale.h264_may_interlace(ffmpeg, src, 0) is may
