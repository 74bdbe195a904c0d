"""Everything but the pixel count comes through: timing, streams, metadata, codecs."""
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

import upscale
from conftest import (cli_env, decoded_frame_count, make_clip, packet_times, probe,
                      run_cli, video_size)


def every_ffmpeg_here():
    """The ffmpeg the tool finds and, where it differs, the first on PATH (often an older
    one, such as Debian 12's 5.1), which a user may point UPSCALE_FFMPEG at."""
    found = [upscale.find_ffmpeg()]
    on_path = shutil.which("ffmpeg")
    if on_path and Path(on_path).resolve() != Path(found[0]).resolve():
        found.append(on_path)
    return found


def test_variable_frame_rate_keeps_every_frame_time(ffmpeg, tmp_path):
    # 30 fps for one second, then 10 fps: a phone-style rate change, in Matroska (1 ms base).
    src = make_clip(ffmpeg, tmp_path / "vfr.mkv", rate="30", seconds=3,
                    vfilter="setpts='if(lt(N,30),N/30/TB,(1+(N-30)/10)/TB)'",
                    extra=("-fps_mode", "vfr"))
    result = run_cli(src, "--scale", "2")
    assert result.returncode == 0, result.stderr
    before = packet_times(ffmpeg, src)
    after = packet_times(ffmpeg, tmp_path / "vfr_fast_x2.mp4")
    assert len(after) == len(before)
    smallest_interval = min(b - a for a, b in zip(before, before[1:]))
    assert max(abs(a - b) for a, b in zip(before, after)) <= smallest_interval / 2


@pytest.mark.parametrize("codec,ext", [("mp4v", "mp4"), ("h264", "mp4"), ("h265", "mp4"),
                                       ("av1", "mp4"), ("av1", "webm"), ("vp9", "webm"),
                                       ("ffv1", "mkv")])
def test_phone_style_variable_frame_rate_keeps_every_time_in_every_codec(ffmpeg, tmp_path,
                                                                         codec, ext):
    # frame gaps of 80-100 ms on a 90 kHz clock, as phones write them
    src = make_clip(ffmpeg, tmp_path / "phone.mp4", rate="30", seconds=3,
                    vfilter="setpts='(N*0.09+0.01*mod(N*7,3))/TB'",
                    extra=("-fps_mode", "vfr", "-video_track_timescale", "90000"))
    out = tmp_path / f"phone_out.{ext}"
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", codec, "-o", out)
    assert result.returncode == 0, result.stderr
    before, after = packet_times(ffmpeg, src), packet_times(ffmpeg, out)
    assert len(after) == len(before) == 90
    assert max(abs(a - b) for a, b in zip(before, after)) <= Fraction(1, 1000)


def shown_frames(ffmpeg, path):
    """(presentation time in s, as the file says, not moved to start at 0; mean luma) of
    each frame ffmpeg decodes, in the order shown. (A file, not the log: showinfo writes a
    frame's line in pieces, which other threads' messages can land between.)"""
    stats = Path(path).with_suffix(".stats.txt")
    subprocess.run([ffmpeg, "-v", "error", "-nostdin", "-copyts", "-i", str(path),
                    "-map", "0:v:0", "-fps_mode", "passthrough", "-vf",
                    f"signalstats,metadata=print:key=lavfi.signalstats.YAVG:file={stats.name}",
                    "-f", "null", "-"], check=True, cwd=stats.parent)
    text = stats.read_text()
    return [(float(t), float(y)) for t, y in re.findall(
        r"pts_time:(\S+)\s+lavfi\.signalstats\.YAVG=(\S+)", text)]


def b_frame_count(ffmpeg, path):
    """How many of a video's frames are coded as B-frames (showinfo's "type:B")."""
    log = subprocess.run([ffmpeg, "-hide_banner", "-nostats", "-nostdin", "-i", str(path),
                          "-map", "0:v:0", "-vf", "showinfo", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    return len(re.findall(r"type:B\b", log))


def rising_vfr_clip(ffmpeg, path, frames=60):
    """frames frames, each one brighter than the one before (detail on top, so that x264
    predicts across them), 1/30 s apart for the first half, then 1/10 s: its frame times."""
    half = frames // 2
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=96x64:r=30,"
                    "format=gray,geq=lum='30+3*N+lum(X,Y)/8',format=yuv420p",
                    "-frames:v", str(frames), "-vf",
                    f"setpts='if(lt(N,{half}),N/30,{half}/30+(N-{half})/10)/TB'",
                    "-fps_mode", "vfr", "-c:v", "libx264", "-qp", "0", str(path)], check=True)
    return [t for t, _ in shown_frames(ffmpeg, path)]


@pytest.mark.parametrize("tool_ffmpeg", every_ffmpeg_here())
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_b_frames_are_shown_in_order_each_at_its_own_time(ffmpeg, tmp_path, codec,
                                                          tool_ffmpeg):
    # x264 and x265 code some frames ahead of those shown before them; across segment joins
    # too, each must still be shown at its own source time and in its place.
    src = tmp_path / "rising.mkv"
    times = rising_vfr_clip(ffmpeg, src)
    out = tmp_path / "rising_out.mp4"
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", codec,
                     "--segment", "1", "-o", out, env=cli_env(UPSCALE_FFMPEG=str(tool_ffmpeg)))
    assert result.returncode == 0, result.stderr
    assert b_frame_count(ffmpeg, out) >= 10
    shown = shown_frames(ffmpeg, out)
    assert len(shown) == len(times) == 60
    assert max(abs(t - s) for (t, _), s in zip(shown, times)) <= 0.0005
    levels = [level for _, level in shown]
    assert all(b > a for a, b in zip(levels, levels[1:])), levels


def test_rewriting_the_timing_keeps_b_frames_in_their_places(ffmpeg, tmp_path):
    path = tmp_path / "b.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=s=96x64:r=10,format=gray,geq=lum='30+4*N+lum(X,Y)/8'",
                    "-frames:v", "30", "-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    times = [0.0]
    for i in range(29):
        times.append(times[-1] + (40, 100, 70)[i % 3])
    upscale.rewrite_mp4_timing(path, times, 70)
    assert b_frame_count(ffmpeg, path) >= 10
    shown = shown_frames(ffmpeg, path)
    assert [round(t * 1000) for t, _ in shown] == [round(t) for t in times]
    levels = [level for _, level in shown]
    assert all(b > a for a, b in zip(levels, levels[1:])), levels


def test_ntsc_rate_stays_exact(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "ntsc.mp4", rate="30000/1001", seconds=1)
    assert run_cli(src, "--scale", "2").returncode == 0
    times = packet_times(ffmpeg, tmp_path / "ntsc_fast_x2.mp4")
    assert {b - a for a, b in zip(times, times[1:])} == {Fraction(1001, 30000)}


def test_film_rate_stays_exact(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "film.mkv", rate="24000/1001", seconds=1)
    assert run_cli(src, "--scale", "2", "--format", "mkv").returncode == 0
    times = packet_times(ffmpeg, tmp_path / "film_fast_x2.mkv")
    # Matroska stores milliseconds: each time must be the exact one rounded to 1 ms.
    exact = [Fraction(1001 * i, 24000) for i in range(len(times))]
    assert all(abs(t - e) <= Fraction(1, 2000) for t, e in zip(times, exact))


def test_mp4_film_rate_is_exact_in_mp4(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "film.mp4", rate="24000/1001", seconds=1)
    assert run_cli(src, "--scale", "2").returncode == 0
    times = packet_times(ffmpeg, tmp_path / "film_fast_x2.mp4")
    assert {b - a for a, b in zip(times, times[1:])} == {Fraction(1001, 24000)}


@pytest.fixture
def multitrack(ffmpeg, tmp_path):
    """Two audio languages, a subtitle track and two chapters, in Matroska."""
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,800\nHello\n")
    chapters = tmp_path / "chapters.txt"
    chapters.write_text(";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=One\n"
                        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Two\n")
    src = tmp_path / "multi.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:d=1",
                    "-f", "lavfi", "-i", "sine=f=440:d=1", "-f", "lavfi", "-i", "sine=f=660:d=1",
                    "-i", str(srt), "-i", str(chapters),
                    "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-map_chapters", "4",
                    "-c:v", "libx264", "-c:a", "libopus", "-c:s", "srt",
                    "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
                    "-metadata:s:s:0", "language=ger", str(src)], check=True)
    return src


def chapter_titles(ffmpeg, path):
    text = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True).stderr
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.strip().startswith("title") and "Chapter" not in line]


def test_matroska_output_keeps_audio_subtitles_and_chapters(ffmpeg, multitrack, tmp_path):
    out = tmp_path / "out.mkv"
    assert run_cli(multitrack, "--scale", "2", "-o", out).returncode == 0
    info = probe(ffmpeg, out)
    assert [(s.kind, s.codec, s.language) for s in info.streams[1:]] == [
        ("audio", "opus", "eng"), ("audio", "opus", "fra"), ("subtitle", "subrip", "ger")]
    assert chapter_titles(ffmpeg, out)[:2] == ["One", "Two"]


def test_mp4_output_turns_text_subtitles_into_mov_text(ffmpeg, multitrack, tmp_path):
    result = run_cli(multitrack, "--scale", "2")
    assert result.returncode == 0, result.stderr
    info = probe(ffmpeg, tmp_path / "multi_fast_x2.mp4")
    subs = info.of_kind("subtitle")
    assert [(s.codec, s.language) for s in subs] == [("mov_text", "ger")]
    assert [a.language for a in info.of_kind("audio")] == ["eng", "fra"]


def test_webm_output_keeps_opus_audio_subtitles_as_webvtt_and_chapters(ffmpeg, multitrack,
                                                                       tmp_path):
    out = tmp_path / "out.webm"
    result = run_cli(multitrack, "--scale", "2", "-o", out)
    assert result.returncode == 0, result.stderr
    info = probe(ffmpeg, out)
    assert [(s.kind, s.codec, s.language) for s in info.streams] == [
        ("video", "vp9", ""), ("audio", "opus", "eng"), ("audio", "opus", "fra"),
        ("subtitle", "webvtt", "ger")]
    assert chapter_titles(ffmpeg, out)[:2] == ["One", "Two"]
    assert "re-encoded" not in result.stderr


def test_webm_output_turns_other_audio_into_opus_and_says_so(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.5)      # AAC sound
    result = run_cli(src, "--scale", "2", "--format", "webm")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "clip_fast_x2.webm"
    assert [(s.kind, s.codec) for s in probe(ffmpeg, out).streams] == [
        ("video", "vp9"), ("audio", "opus")]
    assert "re-encoded to Opus" in result.stderr
    assert out.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"      # EBML magic
    assert decoded_frame_count(ffmpeg, out) == decoded_frame_count(ffmpeg, src)


@pytest.mark.parametrize("codec,name", [("av1", "clip_fast_x2.mp4"),
                                        ("vp9", "clip_fast_x2.webm")])
def test_av1_and_vp9_outputs_are_what_browsers_play(ffmpeg, tmp_path, codec, name):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.5)
    result = run_cli(src, "--scale", "2", "--codec", codec)
    assert result.returncode == 0, result.stderr
    video = probe(ffmpeg, tmp_path / name).video[0]
    assert (video.codec, video.pix_fmt, video.width, video.height) == (codec, "yuv420p", 128, 96)
    report = subprocess.run([ffmpeg, "-hide_banner", "-i", str(tmp_path / name)],
                            capture_output=True, text=True).stderr
    assert "libx264" not in report              # the source's encoder is not named as its
    assert decoded_frame_count(ffmpeg, tmp_path / name) == decoded_frame_count(ffmpeg, src)


def test_h264_output_is_browser_playable(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.5)
    result = run_cli(src, "--scale", "2", "--codec", "h264", "-o", tmp_path / "web.mp4")
    assert result.returncode == 0, result.stderr
    video = probe(ffmpeg, tmp_path / "web.mp4").video[0]
    assert (video.codec, video.pix_fmt) == ("h264", "yuv420p")
    data = (tmp_path / "web.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")        # faststart
    assert video_size(tmp_path / "web.mp4") == (128, 96)


def test_ffv1_output_is_lossless_matroska(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.3)
    assert run_cli(src, "--scale", "2", "--codec", "ffv1").returncode == 0
    out = tmp_path / "clip_fast_x2.mkv"
    assert probe(ffmpeg, out).video[0].codec == "ffv1"
    assert out.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"      # EBML magic: Matroska


@pytest.mark.parametrize("tool_ffmpeg", every_ffmpeg_here())
def test_ffv1_output_is_made_by_every_ffmpeg_on_the_machine(ffmpeg, tmp_path, tool_ffmpeg):
    # The segments are joined before the mux; ffmpeg 5.1's MP4 muxer refused FFV1 there.
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.3)
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", "ffv1",
                     env=cli_env(UPSCALE_FFMPEG=str(tool_ffmpeg)))
    assert result.returncode == 0, result.stderr
    video = probe(ffmpeg, tmp_path / "clip_cubic_x2.mkv").video[0]
    assert (video.codec, video.width, video.height) == ("ffv1", 128, 96)


@pytest.mark.parametrize("tool_ffmpeg", every_ffmpeg_here())
@pytest.mark.parametrize("audio", ["flac", "libopus"])
def test_flac_and_opus_go_into_mp4_as_they_are_with_every_ffmpeg(ffmpeg, tmp_path, tool_ffmpeg,
                                                                 audio):
    # ffmpeg 5.1 refused FLAC in MP4 at the mux, after every frame was upscaled.
    src = make_clip(ffmpeg, tmp_path / "clip.mkv", seconds=0.3, acodec=("-c:a", audio))
    result = run_cli(src, "--model", "cubic", "--scale", "2",
                     env=cli_env(UPSCALE_FFMPEG=str(tool_ffmpeg)))
    assert result.returncode == 0, result.stderr
    sound = probe(ffmpeg, tmp_path / "clip_cubic_x2.mp4").of_kind("audio")
    assert [s.codec for s in sound] == [audio.replace("lib", "")]


def looks(ffmpeg, path):
    """The first frame as a player shows it, as 16x12 block averages: ffmpeg decodes with
    the file's own colour tags (matrix and range) to RGB. Averaging blocks keeps colour
    errors and drops codec noise."""
    import numpy as np
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-frames:v", "1", "-vf",
                          "scale=16:12:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(12, 16, 3).astype(float)


COLOUR_SOURCES = {
    "bt709-limited": ("-vf", "setparams=color_primaries=bt709:color_trc=bt709:"
                      "colorspace=bt709:range=tv"),
    "bt709-full": ("-vf", "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,"
                   "scale=out_color_matrix=bt709:out_range=pc"),
    "bt601-untagged": (),
}


@pytest.mark.parametrize("codec", ["mp4v", "h264"])
@pytest.mark.parametrize("source", sorted(COLOUR_SOURCES))
def test_colours_look_the_same_as_the_source(ffmpeg, tmp_path, source, codec):
    import numpy as np
    src = make_clip(ffmpeg, tmp_path / "src.mkv", seconds=0.2, audio=False,
                    extra=COLOUR_SOURCES[source])
    out = tmp_path / "out.mkv"
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", codec, "-o", out)
    assert result.returncode == 0, result.stderr
    # Measured on this pattern: decoding with the wrong matrix (BT.601 for BT.709) moves
    # the block colours by 6.5 levels on average, the wrong range by 8.6; upscaling and
    # mp4v's loss alone by about 3.6.
    error = np.abs(looks(ffmpeg, out) - looks(ffmpeg, src)).mean()
    assert error < 5.0, error


def player_mean(ffmpeg, path):
    """The mean colour of the first frame decoded as an accurate player does: with the
    file's own matrix and range, rounded rather than truncated."""
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-frames:v", "1", "-vf",
                          "scale=flags=accurate_rnd+full_chroma_int", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 3).mean(axis=0)


def flat_clip(ffmpeg, path, rgb, matrix, full_range):
    """A clip of one colour, converted to YUV with the given matrix and range and tagged."""
    space = {"bt601": "smpte170m", "bt709": "bt709"}[matrix]
    return make_clip(ffmpeg, path, seconds=0.2, audio=False, extra=(
        "-vf", f"format=rgb24,geq=r={rgb[0]}:g={rgb[1]}:b={rgb[2]},scale=out_color_matrix="
               f"{matrix}:out_range={'pc' if full_range else 'tv'}:flags=accurate_rnd,"
               f"format=yuv420p,setparams=colorspace={space}:range="
               f"{'pc' if full_range else 'tv'}"))


@pytest.mark.parametrize("codec", ["h264", "h265", "av1", "vp9", "ffv1"])
@pytest.mark.parametrize("matrix,full_range", [("bt601", False), ("bt709", False),
                                               ("bt601", True), ("bt709", True)])
@pytest.mark.parametrize("rgb", [(128, 128, 128), (64, 64, 64), (200, 200, 200)])
def test_greys_keep_their_level_within_half_a_level(ffmpeg, tmp_path, codec, matrix,
                                                    full_range, rgb):
    # Greys test the conversion back to YUV, which this tool controls (swscale without
    # accurate_rnd wrote grey 128 as Y=125, U=V=127). Saturated colours are still 1-2
    # levels off: OpenCV's decoder rounds them down before the tool sees them (README,
    # "Not yet").
    src = flat_clip(ffmpeg, tmp_path / "flat.mkv", rgb, matrix, full_range)
    out = tmp_path / "out.mkv"
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", codec, "-o", out)
    assert result.returncode == 0, result.stderr
    before, after = (player_mean(ffmpeg, p) for p in (src, out))
    assert np.abs(after - before).max() <= 0.5, (before, after)


@pytest.mark.parametrize("codec,ext", [("h264", "mp4"), ("av1", "mp4"), ("vp9", "webm")])
def test_reencoded_output_keeps_the_source_tags(ffmpeg, tmp_path, codec, ext):
    src = make_clip(ffmpeg, tmp_path / "hd.mp4", seconds=0.3,
                    extra=COLOUR_SOURCES["bt709-full"])
    assert run_cli(src, "--scale", "2", "--codec", codec).returncode == 0
    color = probe(ffmpeg, tmp_path / f"hd_fast_x2.{ext}").video[0].color
    assert (color.get("space"), color.get("primaries"), color.get("range")) == \
        ("bt709", "bt709", "pc")


def test_mp4v_output_is_tagged_as_what_videowriter_wrote(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "hd.mp4", seconds=0.3,
                    extra=COLOUR_SOURCES["bt709-limited"])
    assert run_cli(src, "--scale", "2", "--codec", "mp4v").returncode == 0
    color = probe(ffmpeg, tmp_path / "hd_fast_x2.mp4").video[0].color
    assert (color.get("space"), color.get("primaries"), color.get("range")) == \
        ("smpte170m", "bt709", "tv")


def test_default_output_is_h264_that_browsers_play_in_the_sources_colours(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "hd.mp4", seconds=0.3,
                    extra=COLOUR_SOURCES["bt709-limited"])
    assert run_cli(src, "--scale", "2").returncode == 0
    out = tmp_path / "hd_fast_x2.mp4"
    video = probe(ffmpeg, out).video[0]
    assert video.codec == "h264" and video.pix_fmt == "yuv420p"
    assert (video.color.get("space"), video.color.get("range")) == ("bt709", "tv")
    # faststart: the index (moov) comes before the media data (mdat), so it plays as it loads
    with open(out, "rb") as f:
        boxes = [kind for kind, _, _ in upscale.top_level_boxes(f)]
    assert boxes.index(b"moov") < boxes.index(b"mdat"), boxes


def test_ten_bit_source_warns_of_8_bit_output(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "deep.mkv", seconds=0.2, audio=False,
                    vcodec=("-c:v", "ffv1", "-pix_fmt", "yuv420p10le"))
    result = run_cli(src, "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert "is 10-bit (yuv420p10le): the output is 8-bit; --codec h265, av1 or vp9 keep 10 " \
        "bits" in result.stderr


def red_clip(ffmpeg, path, primaries, transfer, matrix="bt709", pix_fmt="yuv420p",
             size="16x16", pattern=False):
    """A short ffv1 clip, RGB (200, 50, 50) or the moving test pattern, converted with the
    BT.709 or BT.2020 matrix and tagged with these primaries and transfer."""
    space = {"bt709": "bt709", "bt2020": "bt2020nc"}[matrix]
    return make_clip(ffmpeg, path, size=size, seconds=0.2, audio=False,
                     vcodec=("-c:v", "ffv1"), extra=(
                         "-vf", ("" if pattern else "geq=r=200:g=50:b=50,") +
                         f"format=rgb24,scale=out_color_matrix={matrix}:flags=accurate_rnd,"
                         f"format={pix_fmt},setparams=colorspace={space}:"
                         f"color_primaries={primaries}:color_trc={transfer}"))


def opencv_first_frame(path):
    ok, frame = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG).read()
    assert ok, path
    return frame.astype(float)


@pytest.mark.parametrize("primaries,transfer", [
    *((p, "bt709") for p in sorted(upscale.OPENCV_CONVERTED_PRIMARIES)),
    *(("bt709", t) for t in sorted(upscale.OPENCV_CONVERTED_TRANSFERS)),
    ("bt709", "bt709"), ("smpte170m", "smpte170m"), ("bt470bg", "bt709"),
    ("bt709", "bt2020-10"), ("bt709", "iec61966-2-1")])
def test_opencv_turns_exactly_the_tags_in_its_table_into_bt709_sdr(ffmpeg, tmp_path,
                                                                   primaries, transfer):
    # The tables describe OpenCV's decoder, not this tool: if a new OpenCV decodes
    # differently, they must change with it.
    src = red_clip(ffmpeg, tmp_path / "red.mkv", primaries, transfer)
    red = opencv_first_frame(src)[8, 8][::-1]
    converted = np.abs(red - (200, 50, 50)).max() > 8
    assert converted == upscale.opencv_converts_color(
        {"primaries": primaries, "transfer": transfer}), red


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
@pytest.mark.parametrize("source", [("bt2020", "smpte2084", "yuv420p10le"),
                                    ("bt2020", "arib-std-b67", "yuv420p10le"),
                                    ("bt2020", "bt709", "yuv420p")])
def test_with_sdr_a_wide_gamut_or_hdr_source_comes_out_as_opencv_shows_it_tagged_bt709_sdr(
        ffmpeg, tmp_path, source, codec):
    # OpenCV hands over such frames as BT.709 SDR; kept BT.2020 or HDR tags made players
    # show them oversaturated (block colours off by 10-40 levels).
    primaries, transfer, pix_fmt = source
    src = red_clip(ffmpeg, tmp_path / "wide.mkv", primaries, transfer, "bt2020", pix_fmt,
                   size="64x48", pattern=True)
    out = tmp_path / "out.mkv"
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", codec, "--sdr",
                     "-o", out)
    assert result.returncode == 0, result.stderr
    assert "the output is SDR BT.709" in result.stderr
    color = probe(ffmpeg, out).video[0].color
    assert (color.get("primaries"), color.get("transfer")) == ("bt709", "bt709")
    # OpenCV's decoder manages colour as a player does: it shows both as BT.709 SDR.
    before, after = (cv2.resize(opencv_first_frame(p), (16, 12), interpolation=cv2.INTER_AREA)
                     for p in (src, out))
    assert np.abs(after - before).mean() < 5.0


def test_the_ffmpeg_baseline_keeps_an_hdr_sources_tags_and_10_bits(ffmpeg, tmp_path):
    src = red_clip(ffmpeg, tmp_path / "hdr.mkv", "bt2020", "smpte2084", "bt2020",
                   "yuv420p10le", size="64x48", pattern=True)
    result = run_cli(src, "--model", "ffmpeg", "--scale", "2", "-o", tmp_path / "out.mkv")
    assert result.returncode == 0, result.stderr
    video = probe(ffmpeg, tmp_path / "out.mkv").video[0]
    assert (video.color.get("primaries"), video.color.get("transfer")) == \
        ("bt2020", "smpte2084")
    assert (video.codec, video.pix_fmt) == ("hevc", "yuv420p10le")
    assert "8-bit" not in result.stderr.replace("the default, h264, is 8-bit", "")


def deep_ramp(ffmpeg, path, transfer, size=(96, 64), frames=6, primaries="bt2020",
              space="bt2020nc"):
    """A 10-bit clip (BT.2020 with an HDR transfer unless told otherwise) whose picture is
    a gentle ramp across its width: 18 levels of luma, that 8 bits would make 4 or 5 of.
    A diagonal edge moves across it, so a network has something to sharpen."""
    w, h = size
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    level = 500 + (x * 21 // w)
    pictures = []
    for n in range(frames):
        luma = np.where(x + y < 40 + 6 * n, level + 300, level)
        pictures.append((luma << 6).astype("<u2"))
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray16le",
                    "-s", f"{w}x{h}", "-r", "25", "-i", "pipe:0", "-vf",
                    f"format=yuv420p10le,setparams=range=tv:colorspace={space}:"
                    f"color_primaries={primaries}:color_trc={transfer}", "-c:v", "ffv1",
                    str(path)],
                   input=b"".join(p.tobytes() for p in pictures), check=True)
    return path


def luma_levels(ffmpeg, path):
    """Every frame's Y samples as they are coded (4:2:0), in 10-bit units: an 8-bit
    stream's times 4. (Converted to grey by ffmpeg, 8-bit limited-range luma came out
    2 levels darker than 10-bit.)"""
    video = probe(ffmpeg, path).video[0]
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0", "-f",
                          "rawvideo", "-"], capture_output=True, check=True).stdout
    deep = video.pix_fmt == "yuv420p10le"
    samples = np.frombuffer(raw, "<u2" if deep else np.uint8).astype(int) * (1 if deep else 4)
    frame = video.width * video.height * 3 // 2
    return samples.reshape(-1, frame)[:, :video.width * video.height].ravel()


@pytest.mark.parametrize("transfer", ["arib-std-b67", "smpte2084"])
def test_hdr_source_keeps_its_colours_in_10_bit_h265_by_default(ffmpeg, tmp_path, transfer):
    # Phones record 10-bit HLG; made 8-bit SDR (as OpenCV decodes it) the picture lost its
    # HDR and its gradation.
    src = deep_ramp(ffmpeg, tmp_path / "phone.mkv", transfer)
    out = tmp_path / "out.mp4"
    result = run_cli(src, "--scale", "2", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "--codec h265, in 10 bits" in result.stderr and "SDR BT.709, 8-bit" not in \
        result.stderr
    video = probe(ffmpeg, out).video[0]
    assert (video.codec, video.pix_fmt) == ("hevc", "yuv420p10le")
    assert (video.color.get("primaries"), video.color.get("transfer"),
            video.color.get("space")) == ("bt2020", transfer, "bt2020nc")
    # Away from the edge (x + y stays over 40 + 6 * 5 there) the ramp is about as bright
    # as it was (our networks lift a flat area by up to 2 8-bit levels, 8 here).
    before = luma_levels(ffmpeg, src).reshape(6, 64, 96)[:, 8:, 48:]
    after = luma_levels(ffmpeg, out).reshape(6, 128, 192)[:, 16:, 96:]
    assert abs(after.mean() - before.mean()) < 10, (before.mean(), after.mean())


@pytest.mark.parametrize("tool_ffmpeg", every_ffmpeg_here())
@pytest.mark.parametrize("source,options", [
    (("arib-std-b67", "bt2020", "bt2020nc"), ()),
    (("bt709", "bt709", "bt709"), ("--codec", "h265"))])     # an SDR 10-bit camera file
def test_a_10_bit_sources_gradation_comes_through(ffmpeg, tmp_path, source, options,
                                                  tool_ffmpeg):
    src = deep_ramp(ffmpeg, tmp_path / "deep.mkv", source[0], primaries=source[1],
                    space=source[2])
    out = tmp_path / "out.mkv"
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--crf", "0", *options,
                     "-o", out, env=cli_env(UPSCALE_FFMPEG=str(tool_ffmpeg)))
    assert result.returncode == 0, result.stderr
    assert "output is 8-bit" not in result.stderr
    # Each source column against the mean of the two output columns it became: through
    # 8 bits the columns' levels were up to 2 off (4 to a step), here a small fraction.
    before = luma_levels(ffmpeg, src).reshape(6, 64, 96)[:, 8:, 48:].mean(axis=(0, 1))
    after = luma_levels(ffmpeg, out).reshape(6, 128, 192)[:, 16:, 96:].mean(axis=(0, 1))
    error = np.abs(after.reshape(-1, 2).mean(axis=1) - before)[1:-1]
    assert error.mean() < 0.3, error


@pytest.mark.parametrize("tool_ffmpeg", every_ffmpeg_here())
@pytest.mark.parametrize("codec", ["h265", "av1"])
def test_hdr10_mastering_display_and_light_levels_are_kept(ffmpeg, tmp_path, codec,
                                                           tool_ffmpeg):
    # (TVs map HDR10 to their own peak with them; piped raw frames had lost them)
    src = tmp_path / "hdr10.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=128x72:d=0.3",
                    "-vf", "format=yuv420p10le", "-c:v", "libx265", "-x265-params",
                    "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
                    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
                    "L(10000000,1):max-cll=1000,400", str(src)], check=True)
    made = upscale.hdr_static_metadata(ffmpeg, src, 0)
    assert made["light"] == (1000, 400) and made["luminance"] == (0.0001, 1000.0)
    out = tmp_path / "out.mkv"
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", codec, "-o", out,
                     env=cli_env(UPSCALE_FFMPEG=str(tool_ffmpeg)))
    assert result.returncode == 0, result.stderr
    kept = upscale.hdr_static_metadata(ffmpeg, out, 0)
    assert kept["primaries"] == made["primaries"] and kept["white"] == made["white"]
    assert kept["light"] == made["light"]
    # (AV1 holds the least luminance in 1/16384 cd/m2: 0.0001 comes back as 0.000122)
    assert kept["luminance"] == pytest.approx(made["luminance"], abs=1e-4)


def test_hdr_source_written_as_h264_when_asked_keeps_its_tags_in_8_bits(ffmpeg, tmp_path):
    src = deep_ramp(ffmpeg, tmp_path / "phone.mkv", "arib-std-b67")
    out = tmp_path / "out.mp4"
    result = run_cli(src, "--scale", "2", "--codec", "h264", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "the output is 8-bit; --codec h265, av1 or vp9 keep 10 bits" in result.stderr
    video = probe(ffmpeg, out).video[0]
    assert (video.codec, video.pix_fmt) == ("h264", "yuv420p")
    assert (video.color.get("primaries"), video.color.get("transfer")) == \
        ("bt2020", "arib-std-b67")
    before = luma_levels(ffmpeg, src).reshape(6, 64, 96)[:, 8:, 48:]
    after = luma_levels(ffmpeg, out).reshape(6, 128, 192)[:, 16:, 96:]
    assert abs(after.mean() - before.mean()) < 10, (before.mean(), after.mean())


def test_hdr_source_through_the_videowriter_is_rounded_to_8_bits_keeping_its_tags(
        ffmpeg, tmp_path):
    src = deep_ramp(ffmpeg, tmp_path / "phone.mkv", "smpte2084")
    out = tmp_path / "out.mp4"
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", "mp4v", "-o", out)
    assert result.returncode == 0, result.stderr
    color = probe(ffmpeg, out).video[0].color
    assert (color.get("primaries"), color.get("transfer")) == ("bt2020", "smpte2084")
    before = luma_levels(ffmpeg, src).reshape(6, 64, 96)[:, 8:, 48:]
    after = luma_levels(ffmpeg, out).reshape(6, 128, 192)[:, 16:, 96:]
    assert abs(after.mean() - before.mean()) < 6, (before.mean(), after.mean())


def test_wide_gamut_8_bit_source_keeps_its_primaries_in_h264(ffmpeg, tmp_path):
    src = red_clip(ffmpeg, tmp_path / "wide.mkv", "bt2020", "bt709", "bt2020", "yuv420p",
                   size="64x48", pattern=True)
    result = run_cli(src, "--model", "cubic", "--scale", "2", "-o", tmp_path / "out.mp4")
    assert result.returncode == 0, result.stderr
    assert "wide-gamut (bt2020/bt709): read by ffmpeg" in result.stderr
    video = probe(ffmpeg, tmp_path / "out.mp4").video[0]
    assert (video.codec, video.pix_fmt, video.color.get("primaries")) == \
        ("h264", "yuv420p", "bt2020")
    assert np.abs(player_mean(ffmpeg, tmp_path / "out.mp4") - player_mean(ffmpeg, src)).max() \
        < 3.0


def test_timescale_choice_is_exact_for_common_rates():
    ntsc = [i * 1001 / 30 for i in range(100)]
    assert upscale.choose_timescale(ntsc) == 30000
    film = [i * 1001 / 24 for i in range(100)]
    assert upscale.choose_timescale(film) == 24000
    assert upscale.frame_ticks(film, 24000, 1001 / 24) == [1001] * 100


def test_broken_timestamps_are_made_strictly_increasing():
    assert upscale.monotonic_times([0, 40, 40, 30, 120], 40) == [0, 40, 80, 120, 160]


@pytest.mark.parametrize("container", ["mp4", "mkv"])
@pytest.mark.parametrize("method", ["fsrcnn", "ffmpeg"])
def test_video_that_starts_after_the_audio_stays_in_sync(ffmpeg, tmp_path, container, method):
    src = tmp_path / f"late.{container}"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=2",
                    "-f", "lavfi", "-i", "sine=d=2.5", "-filter_complex",
                    "[0]setpts=PTS+0.5/TB[v]", "-map", "[v]", "-map", "1", "-c:v", "libx264",
                    "-c:a", "aac", str(src)], check=True)
    result = run_cli(src, "--model", method, "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = tmp_path / f"late_{method}_x2.mp4"

    def lead(path):
        return packet_times(ffmpeg, path, "v:0")[0] - packet_times(ffmpeg, path, "a:0")[0]
    assert lead(src) > Fraction(4, 10)
    assert abs(lead(out) - lead(src)) <= Fraction(1, 50)       # half a frame at 25 fps


def test_default_and_forced_flags_are_kept(ffmpeg, multitrack, tmp_path):
    flagged = tmp_path / "flagged.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(multitrack), "-map", "0", "-c", "copy",
                    "-disposition:a:0", "0", "-disposition:a:1", "default",
                    "-disposition:s:0", "forced", str(flagged)], check=True)
    out = tmp_path / "out.mkv"
    assert run_cli(flagged, "--scale", "2", "-o", out).returncode == 0
    flags = [(s.kind, s.dispositions) for s in probe(ffmpeg, out).streams[1:]]
    assert flags == [("audio", ()), ("audio", ("default",)), ("subtitle", ("forced",))]


def ffmpeg_frames(ffmpeg, path, width, height):
    """Every frame ffmpeg decodes from the first video stream, as BGR arrays of one size."""
    import numpy as np
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0",
                          "-fps_mode", "passthrough", "-vf", f"scale={width}:{height}",
                          "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def joined_ts(ffmpeg, tmp_path):
    """Two MPEG-TS files joined with cat: the timestamps jump back to 0 halfway. Every frame
    has its own brightness, so order shows in the mean level."""
    parts = []
    for i, freq in enumerate((440, 800)):
        part = tmp_path / f"part{i}.ts"
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                        f"color=s=64x48:r=25:d=1,format=yuv420p,"
                        f"geq=lum='20+100*{i}+4*N':cb=128:cr=128", "-f", "lavfi", "-i",
                        f"sine=f={freq}:d=1", "-c:v", "libx264", "-c:a", "aac", str(part)],
                       check=True)
        parts.append(part.read_bytes())
    src = tmp_path / "joined.ts"
    src.write_bytes(b"".join(parts))
    return src


# In segments of 0.5 s, a time would name two places in the file: it is done in one piece.
@pytest.mark.parametrize("options", [(), ("--segment", "0.5")])
def test_timestamp_jump_keeps_ffmpegs_frames_in_order(ffmpeg, tmp_path, options):
    src = joined_ts(ffmpeg, tmp_path)
    result = run_cli(src, "--scale", "2", *options)
    assert result.returncode == 0, result.stderr
    assert ("in one piece" in result.stderr) == bool(options)
    out = tmp_path / "joined_fast_x2.mp4"
    before = ffmpeg_frames(ffmpeg, src, 64, 48).reshape(50, -1).mean(1)
    after = ffmpeg_frames(ffmpeg, out, 64, 48).reshape(-1, 64 * 48 * 3).mean(1)
    assert len(after) == len(before) == 50
    assert np.all(np.diff(before) > 2)            # the source rises frame after frame...
    assert np.all(np.diff(after) > 2)             # ...so does the output: same order,
    assert np.abs(after - before).max() < 4       # none dropped, doubled or shifted
    times = packet_times(ffmpeg, out)
    assert all(b > a for a, b in zip(times, times[1:]))


def test_reading_a_segment_across_a_timestamp_jump_is_refused(ffmpeg, tmp_path):
    src = joined_ts(ffmpeg, tmp_path)
    segment = upscale.Segment(1, 500.0, 1500.0)
    with pytest.raises(upscale.UnorderedTimes):
        list(upscale.segment_frames(upscale.OpenCVReader(src), segment, upscale.ReadStats()))


def first_frame_shown(ffmpeg, path, width, height):
    """The first frame as a player shows it (display matrix applied), at a given size."""
    return ffmpeg_frames(ffmpeg, path, width, height)[0].astype(float)


@pytest.mark.parametrize("flags", [("-display_hflip",), ("-display_vflip",),
                                   ("-display_rotation", "90", "-display_hflip"),
                                   ("-display_rotation", "270")])
def test_rotation_and_reflection_come_out_as_a_player_shows_them(ffmpeg, tmp_path, flags):
    plain = make_clip(ffmpeg, tmp_path / "plain.mp4", size="64x48", seconds=0.2, audio=False)
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg, "-v", "error", *flags, "-i", str(plain), "-c", "copy", str(turned)],
                   check=True)
    result = run_cli(turned, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    shown = ffmpeg_frames(ffmpeg, turned, 64, 48) if "90" not in flags and "270" not in flags \
        else ffmpeg_frames(ffmpeg, turned, 48, 64)
    h, w = shown.shape[1:3]
    out = first_frame_shown(ffmpeg, tmp_path / "turned_cubic_x2.mp4", w, h)
    assert np.abs(out - shown[0]).mean() < 8          # a wrong turn differs by about 50


def stream_titles(ffmpeg, path, key):
    text = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True).stderr
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.strip().startswith(key)]


def test_track_titles_are_kept(ffmpeg, multitrack, tmp_path):
    titled = tmp_path / "titled.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(multitrack), "-map", "0", "-c", "copy",
                    "-metadata:s:a:1", "title=Commentary", str(titled)], check=True)
    assert run_cli(titled, "--scale", "2", "-o", tmp_path / "out.mkv").returncode == 0
    assert "Commentary" in stream_titles(ffmpeg, tmp_path / "out.mkv", "title")
    assert run_cli(titled, "--scale", "2", "-o", tmp_path / "out.mp4").returncode == 0
    assert "Commentary" in stream_titles(ffmpeg, tmp_path / "out.mp4", "handler_name")


def test_audio_is_copied_bit_exact(ffmpeg, multitrack, tmp_path):
    def audio_packets(path):
        return subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0",
                               "-c", "copy", "-f", "framemd5", "-"], capture_output=True,
                              text=True, check=True).stdout.splitlines()
    out = tmp_path / "out.mkv"
    assert run_cli(multitrack, "--scale", "2", "-o", out).returncode == 0
    checksums = [line.rsplit(",", 1)[-1] for line in audio_packets(multitrack)
                 if not line.startswith("#")]
    assert checksums == [line.rsplit(",", 1)[-1] for line in audio_packets(out)
                         if not line.startswith("#")]


def test_mov_output_is_quicktime_and_keeps_pcm_audio(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "camera.mov", seconds=0.3, acodec=("-c:a", "pcm_s16le"))
    out = tmp_path / "big.mov"
    result = run_cli(src, "--scale", "2", "-o", out)
    assert result.returncode == 0, result.stderr
    info = probe(ffmpeg, out)
    assert info.format.startswith("mov") and b"qt  " in out.read_bytes()[:32]
    assert [a.codec for a in info.of_kind("audio")] == ["pcm_s16le"]
    assert "re-encoded" not in result.stderr


def test_frames_repeating_the_one_before_are_upscaled_once_and_written_each_time(
        ffmpeg, tmp_path, model_dir):
    # A 5 fps picture held for five frames at 25 fps, losslessly coded: every unique picture
    # decodes to exactly the same pixels four more times, as slides and screen recordings do.
    src = tmp_path / "held.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=s=96x64:r=5:d=2,fps=25", "-f", "lavfi", "-i", "sine=d=2",
                    "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", "-c:a", "aac",
                    "-shortest", str(src)], check=True)
    shown = ffmpeg_frames(ffmpeg, src, 96, 64)
    repeats = sum(np.array_equal(a, b) for a, b in zip(shown, shown[1:]))
    assert repeats == 40                         # ffmpeg's own decoding says so too
    result = run_cli(src, "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert f"{repeats} of 50 frames repeat the frame before them" in result.stderr
    upscaler = upscale.make_upscaler(upscale.METHODS["fast"], 2, model_dir)
    source = cv2.VideoCapture(str(src))
    output = cv2.VideoCapture(str(tmp_path / "held_fast_x2.mp4"))
    for i in range(50):
        ok, frame = source.read()
        ok_out, written = output.read()
        # Each frame is its own picture upscaled, within mp4v's loss (about 31 dB here;
        # the neighbouring pictures are 17 dB or less away).
        assert ok and ok_out and cv2.PSNR(written, upscaler.upscale(frame)) > 25, i
    assert not output.read()[0]


@pytest.mark.parametrize("codec", ["ffv1", "h264", "mp4v", "av1", "vp9"])
def test_uneven_frame_gaps_off_any_millisecond_grid_are_kept_by_every_codec(
        ffmpeg, tmp_path, codec):
    # 25 frames 0.08-0.10 s apart, each a few ticks of 1/90000 off the millisecond grid (as a
    # camera's clock gives them). FFV1 is re-encoded by ffmpeg at the mux, which took
    # 1/rate as its time base and spaced the frames evenly.
    src = tmp_path / "uneven.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10",
                    "-frames:v", "25", "-c:v", "libx264", "-bf", "0", str(src)], check=True)
    gaps = [100, 90, 90, 80]
    times = [0.0]
    for i in range(24):
        times.append(times[-1] + gaps[i % 4] + (i % 3) / 90)
    upscale.rewrite_mp4_timing(src, times, 90)
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--codec", codec)
    assert result.returncode == 0, result.stderr
    out = tmp_path / f"uneven_cubic_x2.{upscale.CODECS[codec].container}"
    kept = sorted(packet_times(ffmpeg, out))
    assert len(kept) == 25
    assert max(abs(float(k) * 1000 - t) for k, t in zip(kept, times)) <= 1.0


def test_a_webm_sources_nominal_rate_is_the_outputs(ffmpeg, tmp_path):
    # WebM keeps times in whole milliseconds (0, 33, 67, 100 ...); written as they are, the
    # output's average rate came out 29.99, not the source's 30
    src = tmp_path / "clip.webm"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=30:duration=2", "-c:v", "libvpx-vp9", "-b:v",
                    "200k", str(src)], check=True)
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    line = subprocess.run([ffmpeg, "-hide_banner", "-i", str(tmp_path / "clip_cubic_x2.mp4")],
                          capture_output=True, text=True).stderr
    stream = [x for x in line.splitlines() if "Video:" in x][0]
    assert ", 30 fps, 30 tbr" in stream, stream
    decode = subprocess.run([ffmpeg, "-v", "warning", "-i", str(tmp_path / "clip_cubic_x2.mp4"),
                             "-f", "null", "-"], capture_output=True, text=True)
    assert "non monotonically increasing dts" not in decode.stderr
