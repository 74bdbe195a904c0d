"""The core pipeline on real clips: frames, size, duration and audio come through."""
import os
import subprocess
from fractions import Fraction

import pytest

import upscale
from conftest import (decoded_frame_count, leftovers, make_clip, needs_tensorflow,
                      packet_times, probe, run_cli, video_size)

CONTAINERS = {
    "mp4": (("-c:v", "libx264", "-pix_fmt", "yuv420p"), ("-c:a", "aac")),
    "mov": (("-c:v", "libx264", "-pix_fmt", "yuv420p"), ("-c:a", "pcm_s16le")),
    "mkv": (("-c:v", "libx264", "-pix_fmt", "yuv420p"), ("-c:a", "libvorbis")),
    "webm": (("-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-deadline", "realtime"),
             ("-c:a", "libopus")),
    "avi": (("-c:v", "mpeg4", "-q:v", "3"), ("-c:a", "libmp3lame")),
}


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_every_container_gives_all_frames_scaled_size_and_audio(ffmpeg, tmp_path, container):
    vcodec, acodec = CONTAINERS[container]
    src = make_clip(ffmpeg, tmp_path / f"clip.{container}", size="64x48", seconds=1,
                    vcodec=vcodec, acodec=acodec)
    result = run_cli(src, "--model", "fsrcnn", "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "clip_fsrcnn_x2.mp4"
    assert decoded_frame_count(ffmpeg, out) == decoded_frame_count(ffmpeg, src)
    assert video_size(out) == (128, 96)
    assert len(probe(ffmpeg, out).of_kind("audio")) == 1
    assert leftovers(tmp_path) == []


def test_an_animated_gif_in_a_folder_becomes_an_mp4_with_every_frame_at_its_time(ffmpeg,
                                                                                 tmp_path):
    # GIF delays differ frame to frame: 10 frames of 1/10 s, then 5 of 3/10 s
    folder = tmp_path / "in"
    folder.mkdir()
    src = make_clip(ffmpeg, folder / "anim.gif", rate="10", seconds=1.5, audio=False,
                    vcodec=("-c:v", "gif"),
                    vfilter="setpts='if(lt(N,10),N/10/TB,(1+(N-10)*3/10)/TB)'",
                    extra=("-fps_mode", "vfr"))
    result = run_cli(folder, "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = folder / "anim_fast_x2.mp4"
    assert video_size(out) == (128, 96)
    before, after = packet_times(ffmpeg, src), packet_times(ffmpeg, out)
    assert len(after) == len(before) == 15
    assert max(abs(a - b) for a, b in zip(before, after)) <= Fraction(1, 20)
    assert "transparency" not in result.stderr                  # an opaque GIF


def test_a_gif_with_clear_pixels_made_a_video_says_its_transparency_is_lost(
        ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "sticker.gif", rate="10", seconds=0.5, audio=False,
                    vcodec=("-c:v", "gif"), vfilter="format=rgba,geq=r='r(X,Y)':g='g(X,Y)':"
                    "b='b(X,Y)':a='if(lt(X,32),0,255)',split[a][b];[a]palettegen="
                    "reserve_transparent=1[p];[b][p]paletteuse=alpha_threshold=128")
    result = run_cli(src, "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert "sticker.gif: its transparency cannot be kept in a video" in result.stderr
    assert "-o NAME.webp" in result.stderr


@pytest.mark.parametrize("name,vcodec", [
    ("sticker.webm", ("-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p")),       # WebM's alpha
    ("title.mov", ("-c:v", "prores_ks", "-profile:v", "4444", "-pix_fmt", "yuva444p10le"))])
def test_a_video_with_an_alpha_channel_says_its_transparency_is_not_kept(ffmpeg, tmp_path,
                                                                         name, vcodec):
    src = make_clip(ffmpeg, tmp_path / name, seconds=0.2, audio=False, vcodec=vcodec,
                    vfilter="format=yuva444p,geq=lum='lum(X,Y)':cb='cb(X,Y)':cr='cr(X,Y)':"
                    "a='if(lt(X,32),0,255)'")
    assert probe(ffmpeg, src).video[0].alpha
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert f"{name}: has an alpha channel (transparency), which the output does not keep" \
        in result.stderr


def test_an_opaque_video_says_nothing_of_transparency(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.webm", seconds=0.2, audio=False,
                    vcodec=("-c:v", "libvpx-vp9"))
    assert not probe(ffmpeg, src).video[0].alpha
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0 and "transparency" not in result.stderr


def test_duration_is_within_one_frame_of_source(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", rate="25", seconds=2)
    assert run_cli(src, "--scale", "2").returncode == 0
    src_times = packet_times(ffmpeg, src)
    out_times = packet_times(ffmpeg, tmp_path / "clip_fast_x2.mp4")
    assert len(out_times) == len(src_times) == 50
    assert abs(float(out_times[-1] - src_times[-1])) <= 1 / 25


def test_source_without_audio_gives_video_only_output(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "silent.mp4", audio=False)
    result = run_cli(src, "--scale", "2")
    assert result.returncode == 0, result.stderr
    info = probe(ffmpeg, tmp_path / "silent_fast_x2.mp4")
    assert [s.kind for s in info.streams] == ["video"]


def test_pcm_audio_is_reencoded_for_mp4_not_lost(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "pcm.mov", acodec=("-c:a", "pcm_s16le"))
    result = run_cli(src, "--scale", "2")
    assert result.returncode == 0, result.stderr
    audio = probe(ffmpeg, tmp_path / "pcm_fast_x2.mp4").of_kind("audio")
    assert [a.codec for a in audio] == ["aac"]
    assert "re-encoded" in result.stderr


def test_every_audio_stream_is_kept(ffmpeg, tmp_path):
    src = tmp_path / "two.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:d=1",
                    "-f", "lavfi", "-i", "sine=f=440:d=1", "-f", "lavfi", "-i", "sine=f=660:d=1",
                    "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-c:a", "aac",
                    "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
                    str(src)], check=True)
    assert run_cli(src, "--scale", "2").returncode == 0
    audio = probe(ffmpeg, tmp_path / "two_fast_x2.mp4").of_kind("audio")
    assert [a.language for a in audio] == ["eng", "fra"]


def test_odd_sized_source_at_x2_keeps_exact_size(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "odd.mkv", vfilter="format=yuv444p,crop=51:37",
                    vcodec=("-c:v", "ffv1", "-pix_fmt", "yuv444p"), audio=False)
    assert run_cli(src, "--scale", "2").returncode == 0
    assert video_size(tmp_path / "odd_fast_x2.mp4") == (102, 74)


def test_odd_output_size_is_padded_to_even_with_a_warning(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "odd.mkv", vfilter="format=yuv444p,crop=51:37",
                    vcodec=("-c:v", "ffv1", "-pix_fmt", "yuv444p"), audio=False)
    result = run_cli(src, "--scale", "3")
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / "odd_fast_x3.mp4") == (154, 112)
    assert result.stderr.count("is odd-sized; padded to 154x112") == 1


def test_rotated_source_is_upscaled_upright(ffmpeg, tmp_path):
    plain = make_clip(ffmpeg, tmp_path / "plain.mp4", size="64x48")
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-display_rotation", "90", "-i", str(plain),
                    "-c", "copy", str(rotated)], check=True)
    assert run_cli(rotated, "--scale", "2").returncode == 0
    assert video_size(tmp_path / "rotated_fast_x2.mp4") == (96, 128)


@pytest.mark.parametrize("method,scales", [
    ("fast", (2, 3, 4)), ("fsrcnn", (2, 3, 4)), ("fsrcnn-small", (2, 3, 4)), ("espcn", (2, 3, 4)),
    pytest.param("lapsrn", (2, 4, 8), marks=needs_tensorflow),
])
def test_every_model_and_scale_upscales(ffmpeg, tmp_path, method, scales):
    src = make_clip(ffmpeg, tmp_path / "tiny.mp4", size="32x24", rate="5", seconds=0.6)
    for scale in scales:
        result = run_cli(src, "--model", method, "--scale", scale)
        assert result.returncode == 0, result.stderr
        out = tmp_path / f"tiny_{method}_x{scale}.mp4"
        assert video_size(out) == (32 * scale, 24 * scale)
        assert decoded_frame_count(ffmpeg, out) == 3


@pytest.mark.parametrize("method", ["fast", "cubic", "ffmpeg"])
def test_a_video_of_2_by_2_pixels_is_upscaled(ffmpeg, tmp_path, method):
    # (ffmpeg's deinterlacer, in the ffmpeg baseline's filters, refused it)
    src = make_clip(ffmpeg, tmp_path / "dot.mp4", size="2x2", seconds=0.2,
                    vcodec=("-c:v", "libx264", "-pix_fmt", "yuv444p"))
    result = run_cli(src, "--model", method, "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / f"dot_{method}_x2.mp4") == (4, 4)


@pytest.mark.parametrize("method", ["nearest", "linear", "cubic", "area", "lanczos", "ffmpeg"])
def test_every_baseline_upscales_with_audio(ffmpeg, tmp_path, method):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="40x30", seconds=0.5)
    result = run_cli(src, "--model", method, "--scale", "3")
    assert result.returncode == 0, result.stderr
    out = tmp_path / f"clip_{method}_x3.mp4"
    assert video_size(out) == (120, 90)
    assert decoded_frame_count(ffmpeg, out) == decoded_frame_count(ffmpeg, src)
    assert len(probe(ffmpeg, out).of_kind("audio")) == 1


@pytest.mark.parametrize("codec", sorted(upscale.CODECS))
def test_the_ffmpeg_baseline_writes_every_codec_keeping_frame_times(ffmpeg, tmp_path, codec):
    # (MPEG-4 part 2's encoder refused the 1/90000 clock the others keep times in)
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="40x30", rate="30000/1001",
                    seconds=0.5)
    out = tmp_path / "out.mkv"
    result = run_cli(src, "--model", "ffmpeg", "--scale", "2", "--codec", codec, "-o", out)
    assert result.returncode == 0, result.stderr
    assert packet_times(ffmpeg, out) == pytest.approx(packet_times(ffmpeg, src), abs=1e-3)


def test_opencv_log_noise_does_not_reach_the_user(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", audio=False, seconds=0.2)
    result = run_cli(src, "--model", "espcn", "--scale", "2")
    assert result.returncode == 0
    assert "[ERROR" not in result.stderr and "[WARN" not in result.stderr


def test_several_inputs_and_folder_inputs_are_all_done(ffmpeg, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("b", "a"):
        make_clip(ffmpeg, folder / f"{name}.mp4", seconds=0.2)
    (folder / "notes.txt").write_text("not a video")
    single = make_clip(ffmpeg, tmp_path / "c.mkv", seconds=0.2)
    result = run_cli(folder, single, "--scale", "2")
    assert result.returncode == 0, result.stderr
    done = [line for line in result.stderr.splitlines() if line.startswith("done:")]
    assert [line.split()[1].rsplit("/", 1)[-1] for line in done] == ["a.mp4", "b.mp4", "c.mkv"]


def test_a_folder_input_names_its_subfolders_of_videos_it_leaves_out(ffmpeg, tmp_path):
    folder = tmp_path / "trip"
    for sub in ("day1", "day2", "empty", ".thumbnails"):
        (folder / sub).mkdir(parents=True)
    make_clip(ffmpeg, folder / "a.mp4", seconds=0.2, audio=False)
    make_clip(ffmpeg, folder / "day1" / "b.mp4", seconds=0.2, audio=False)
    make_clip(ffmpeg, folder / "day2" / "c.mp4", seconds=0.2, audio=False)
    make_clip(ffmpeg, folder / ".thumbnails" / "d.mp4", seconds=0.2, audio=False)
    (folder / "empty" / "notes.txt").write_text("not a video")
    result = run_cli(folder, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "subfolders" in line]
    assert len(notes) == 1 and "2 subfolders" in notes[0]
    assert "day1" in notes[0] and "day2" in notes[0] and "empty" not in notes[0]
    assert not (folder / "day1" / "b_cubic_x2.mp4").exists()
    named = run_cli(folder, folder / "day1", folder / "day2", "--model", "cubic", "--scale", "2")
    assert named.returncode == 0 and "subfolders" not in named.stderr
    assert (folder / "day1" / "b_cubic_x2.mp4").is_file()


def test_a_folder_of_dvd_camcorder_and_broadcast_files_is_all_done(ffmpeg, tmp_path):
    folder = tmp_path / "tapes"
    folder.mkdir()
    make_clip(ffmpeg, folder / "a.vob", seconds=0.2, vcodec=("-c:v", "mpeg2video"),
              acodec=("-c:a", "mp2"), extra=("-f", "vob"))
    make_clip(ffmpeg, folder / "b.mxf", seconds=0.2, vcodec=("-c:v", "mpeg2video"),
              acodec=("-c:a", "pcm_s16le"))
    make_clip(ffmpeg, folder / "c.mod", seconds=0.2, vcodec=("-c:v", "mpeg2video"),
              acodec=("-c:a", "ac3"), extra=("-f", "mpeg"))
    make_clip(ffmpeg, folder / "d.dv", size="720x576", seconds=0.12,
              vcodec=("-target", "pal-dv", "-pix_fmt", "yuv420p"), acodec=())
    result = run_cli(folder, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir() if "_cubic_" in p.name) == \
        ["a_cubic_x2.mp4", "b_cubic_x2.mp4", "c_cubic_x2.mp4", "d_cubic_x2.mp4"]


def test_an_aspect_set_by_the_container_is_the_one_the_output_is_shown_at(ffmpeg, tmp_path):
    # `ffmpeg -aspect 16:9 -c copy` (or mkvmerge --aspect-ratio) fixes a wrong shape without
    # touching the stream; players show the file 16:9, and so must the output be.
    plain = make_clip(ffmpeg, tmp_path / "plain.mp4", size="96x64", seconds=0.2)
    fixed = tmp_path / "fixed.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(plain), "-c", "copy", "-aspect", "16:9",
                    str(fixed)], check=True)
    result = run_cli(fixed, "--model", "cubic", "--height", "128")
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / "fixed_cubic_128p.mp4") == (228, 128)


def test_a_dvd_vobs_packets_without_times_leave_its_rate_and_start_right(ffmpeg, tmp_path):
    # MPEG-PS gives some packets no presentation time; they were read as -1e14 seconds,
    # and the encoder was asked for 0.000000 frames a second.
    src = make_clip(ffmpeg, tmp_path / "title.vob", seconds=2, audio=False,
                    vcodec=("-c:v", "mpeg2video", "-bf", "2"), extra=("-f", "vob"))
    times = upscale.first_packet_times(ffmpeg, src, 0)
    assert upscale.measured_rate(times) == pytest.approx(25, rel=0.1)
    assert upscale.video_start(times) == pytest.approx(0, abs=0.05)


def test_folder_rerun_skips_earlier_outputs_as_inputs(ffmpeg, tmp_path):
    make_clip(ffmpeg, tmp_path / "a.mp4", seconds=0.2)
    assert run_cli(tmp_path, "--scale", "2").returncode == 0
    again = run_cli(tmp_path, "--scale", "2")
    assert again.returncode == 0
    assert "a_fast_x2_fast_x2" not in " ".join(p.name for p in tmp_path.iterdir())
    assert "skip:" in again.stderr


def test_default_output_name_and_output_dir(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "my clip.mp4", seconds=0.2)
    out_dir = tmp_path / "new" / "folder"
    result = run_cli(src, "--model", "espcn", "--scale", "3", "--output-dir", out_dir)
    assert result.returncode == 0, result.stderr
    assert (out_dir / "my clip_espcn_x3.mp4").is_file()


def test_explicit_mkv_output_is_matroska(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    out = tmp_path / "result.mkv"
    assert run_cli(src, "--scale", "2", "-o", out).returncode == 0
    assert out.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"      # EBML magic


# Sources whose sound and subtitles each output container but their own cannot hold as they
# are: MP4's mov_text, Matroska's FLAC and ASS, WebM's Opus and WebVTT, QuickTime's PCM.
MUX_SOURCES = {
    "mp4": ("-c:a", "aac", "-c:s", "mov_text"),
    "mkv": ("-c:a", "flac", "-c:s", "ass"),
    "webm": ("-c:a", "libopus", "-c:s", "webvtt"),
    "mov": ("-c:a", "pcm_s24le", "-c:s", "mov_text"),
}


@pytest.mark.parametrize("source", sorted(MUX_SOURCES))
@pytest.mark.parametrize("output", sorted(upscale.CONTAINERS))
def test_every_output_container_takes_every_source_containers_sound_and_subtitles(
        ffmpeg, tmp_path, source, output):
    (tmp_path / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:00,300\nHello\n")
    src = tmp_path / f"clip.{source}"
    vcodec = ("-c:v", "libvpx-vp9", "-deadline", "realtime") if source == "webm" else \
        ("-c:v", "libx264")
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:d=0.4",
                    "-f", "lavfi", "-i", "sine=d=0.4", "-i", tmp_path / "subs.srt",
                    "-map", "0", "-map", "1", "-map", "2", *vcodec, *MUX_SOURCES[source],
                    src], check=True)
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--format", output)
    assert result.returncode == 0, result.stderr
    kept = probe(ffmpeg, tmp_path / f"clip_cubic_x2.{output}")
    assert [s.kind for s in kept.streams] == ["video", "audio", "subtitle"]


def test_surround_sound_of_any_layout_is_re_encoded_into_webm(ffmpeg, tmp_path):
    # AC-3 5.1 decodes as 5.1(side), a layout libopus refuses as it is
    src = make_clip(ffmpeg, tmp_path / "film.mkv", seconds=0.3,
                    acodec=("-c:a", "ac3", "-ac", "6"))
    assert "5.1(side)" in subprocess.run([ffmpeg, "-hide_banner", "-i", src],
                                         capture_output=True, text=True).stderr
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--format", "webm")
    assert result.returncode == 0, result.stderr
    report = subprocess.run([ffmpeg, "-hide_banner", "-i", tmp_path / "film_cubic_x2.webm"],
                            capture_output=True, text=True).stderr
    assert "Audio: opus, 48000 Hz, 5.1," in report


def test_sound_the_output_container_refuses_is_found_before_the_work_and_re_encoded(
        ffmpeg, tmp_path):
    # QuickTime's IMA ADPCM: Matroska's muxer has no tag for it, and would have failed the
    # output once every frame was upscaled.
    src = make_clip(ffmpeg, tmp_path / "camera.mov", seconds=0.4,
                    acodec=("-c:a", "adpcm_ima_qt"))
    info = probe(ffmpeg, src)
    assert upscale.refused_streams(ffmpeg, src, info, upscale.CONTAINERS["mkv"]) == {1}
    assert upscale.refused_streams(ffmpeg, src, info, upscale.CONTAINERS["mov"]) == set()
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--format", "mkv")
    assert result.returncode == 0, result.stderr
    assert "audio stream 1 (adpcm_ima_qt) cannot go into MKV as it is" in result.stderr
    out = probe(ffmpeg, tmp_path / "camera_cubic_x2.mkv")
    assert [(s.kind, s.codec) for s in out.streams][1:] == [("audio", "aac")]


@pytest.mark.parametrize("fmt", ["mp4", "mov", "mkv"])
def test_a_phone_videos_creation_time_is_kept_once_and_exactly(ffmpeg, tmp_path, fmt):
    # (ffmpeg 7 and later read a time that is both in the headers and a tag as "T;T")
    src = make_clip(ffmpeg, tmp_path / "IMG_0042.mov", seconds=0.3,
                    extra=("-metadata", "creation_time=2024-05-01T10:30:00Z"))
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--format", fmt)
    assert result.returncode == 0, result.stderr
    out = probe(ffmpeg, tmp_path / f"IMG_0042_cubic_x2.{fmt}")
    assert out.tags["creation_time"] == "2024-05-01T10:30:00.000000Z"


SUBTITLES = "1\n00:00:00,000 --> 00:00:00,300\nHello\n"


def test_subtitle_files_beside_a_video_are_copied_beside_its_output_under_its_name(
        ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "film.mp4", seconds=0.2, audio=False)
    (tmp_path / "film.srt").write_text(SUBTITLES)
    (tmp_path / "film.en.ass").write_text("[Script Info]\n")
    make_clip(ffmpeg, tmp_path / "film.part2.mp4", seconds=0.2, audio=False)
    (tmp_path / "film.part2.srt").write_text("another film's")
    result = run_cli(src, "--model", "cubic", "--scale", "2", "--output-dir", tmp_path / "big")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == [
        "film_cubic_x2.en.ass", "film_cubic_x2.mp4", "film_cubic_x2.srt"]
    assert (tmp_path / "big" / "film_cubic_x2.srt").read_text() == SUBTITLES
    assert "subtitle files copied" in result.stderr


def test_a_different_subtitle_file_already_beside_the_output_is_kept_unless_overwriting(
        ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "film.mp4", seconds=0.2, audio=False)
    (tmp_path / "film.srt").write_text(SUBTITLES)
    (tmp_path / "film_cubic_x2.srt").write_text("the user's own")
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 0 and "already exist with other contents" in result.stderr
    assert (tmp_path / "film_cubic_x2.srt").read_text() == "the user's own"
    again = run_cli(src, "--model", "cubic", "--scale", "2", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "film_cubic_x2.srt").read_text() == SUBTITLES
    assert leftovers(tmp_path) == []


def test_sound_no_encoder_can_put_into_the_output_fails_before_any_frame_is_upscaled(
        ffmpeg, tmp_path):
    src = tmp_path / "studio.mov"                            # 16 channels (9.1.6)
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:d=0.4",
                    "-f", "lavfi", "-i", "anullsrc=cl=hexadecagonal:d=0.4", "-c:v", "libx264",
                    "-c:a", "pcm_s16le", src], check=True)
    if subprocess.run([ffmpeg, "-nostdin", "-v", "quiet", "-y", "-i", src, "-map", "0:a",
                       "-c:a", "aac", "-f", "mp4", os.devnull]).returncode == 0:
        pytest.skip("this ffmpeg's AAC encoder takes 16 channels")
    result = run_cli(src, "--model", "cubic", "--scale", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "into MP4" in result.stderr and "--format mkv" in result.stderr
    assert "->" not in result.stderr                    # no size plan: no work was started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studio.mov"]


def test_a_matroska_films_fonts_styled_subtitles_and_chapters_stay_in_a_matroska_output(
        ffmpeg, tmp_path):
    (tmp_path / "font.ttf").write_bytes(b"\0\1\0\0" + bytes(range(256)) * 8)
    (tmp_path / "chapters.txt").write_text(
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=200\ntitle=Opening\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=200\nEND=400\ntitle=Ending\n")
    (tmp_path / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:00,300\nHello\n")
    src = tmp_path / "film.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:d=0.4",
                    "-i", tmp_path / "subs.srt", "-i", tmp_path / "chapters.txt",
                    "-map", "0", "-map", "1", "-map_chapters", "2", "-c:v", "libx264",
                    "-c:s", "ass", "-attach", tmp_path / "font.ttf",
                    "-metadata:s:t", "mimetype=font/ttf", src], check=True)
    result = run_cli(src, "--scale", "2", "--format", "mkv")
    assert result.returncode == 0, result.stderr
    report = subprocess.run([ffmpeg, "-hide_banner", "-i", tmp_path / "film_fast_x2.mkv"],
                            capture_output=True, text=True).stderr
    kept = upscale.parse_probe(report)
    assert [(s.kind, s.codec) for s in kept.streams][:2] == [("video", "h264"),
                                                             ("subtitle", "ass")]
    assert [s.kind for s in kept.streams][2:] == ["attachment"]
    assert "filename        : font.ttf" in report and "mimetype        : font/ttf" in report
    assert "title           : Ending" in report


# (Matroska and WebM store tags in upper case: an output of theirs was refused as "made by
# something else".)
@pytest.mark.parametrize("options,name", [((), "clip_fast_x2.mp4"),
                                          (("--format", "mkv"), "clip_fast_x2.mkv"),
                                          (("-o", "out.webm"), "out.webm")])
def test_existing_output_made_the_same_way_is_skipped_then_replaced_with_overwrite(
        ffmpeg, tmp_path, options, name):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    out = tmp_path / name
    assert run_cli(src, "--scale", "2", *options, cwd=tmp_path).returncode == 0
    first = out.stat()
    skipped = run_cli(src, "--scale", "2", *options, cwd=tmp_path)
    assert skipped.returncode == 0 and "same settings" in skipped.stderr
    assert "--overwrite" in skipped.stderr and out.stat().st_ino == first.st_ino
    replaced = run_cli(src, "--scale", "2", *options, "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0 and out.stat().st_ino != first.st_ino
    assert video_size(out) == (128, 96)


@pytest.mark.parametrize("change,words", [
    (["--codec", "mp4v"], ["codec h264, asked mp4v", "crf 18, asked -"]),
    (["--crf", "23"], ["crf 18, asked 23"]),
    (["--preset", "veryslow"], ["preset superfast, asked veryslow"]),
    (["--model", "fsrcnn-opencv", "-o", "clip_fast_x2.mp4"],
     ["model fast, asked fsrcnn-opencv"])])
def test_existing_output_made_another_way_is_refused_saying_what_differs(
        ffmpeg, tmp_path, change, words):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    out = tmp_path / "clip_fast_x2.mp4"
    assert run_cli(src, "--scale", "2").returncode == 0
    before = out.read_bytes()
    result = run_cli(src, "--scale", "2", *change, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = [x for x in result.stderr.splitlines() if x.startswith("upscale: error")][0]
    assert all(w in line for w in words) and "--overwrite" in line
    assert out.read_bytes() == before


def test_existing_output_of_a_source_since_replaced_is_refused_not_handed_back(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    out = tmp_path / "clip_fast_x2.mp4"
    assert run_cli(src, "--scale", "2").returncode == 0
    before = out.read_bytes()
    make_clip(ffmpeg, src, seconds=0.3)              # a new edit exported under the old name
    result = run_cli(src, "--scale", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = [x for x in result.stderr.splitlines() if x.startswith("upscale: error")][0]
    assert "from another source file" in line and "--overwrite" in line
    assert out.read_bytes() == before
    assert run_cli(src, "--scale", "2", "--overwrite").returncode == 0
    assert decoded_frame_count(ffmpeg, out) == decoded_frame_count(ffmpeg, src)
    assert "skip:" in run_cli(src, "--scale", "2").stderr


def test_existing_file_not_made_by_this_tool_is_not_taken_for_a_result(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    other = make_clip(ffmpeg, tmp_path / "clip_fast_x2.mp4", seconds=0.2)
    before = other.read_bytes()
    result = run_cli(src, "--scale", "2")
    assert result.returncode == 1 and "records no upscale.py settings" in result.stderr
    assert other.read_bytes() == before


def test_input_is_never_modified(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.3)
    before = src.read_bytes()
    assert run_cli(src, "--scale", "2").returncode == 0
    assert src.read_bytes() == before


def test_progress_goes_to_stderr_and_quiet_silences_it(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.3)
    loud = run_cli(src, "--scale", "2")
    assert "frames" in loud.stderr and loud.stdout == ""
    quiet = run_cli(src, "--scale", "2", "--overwrite", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_help_shows_examples_and_models():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "lapsrn (2/4/8)" in result.stdout


class FakeTerminal:
    """A text stream that says it is a terminal, to see what a user's terminal gets."""

    def __init__(self, tty):
        self.text, self.tty = "", tty

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_on_a_terminal_redraws_one_line_with_eta():
    import upscale
    term = FakeTerminal(tty=True)
    progress = upscale.Progress("clip.mp4", 100, stream=term)
    progress.last -= 1            # as if the last redraw was a second ago
    progress.update(50)
    progress.close()
    assert term.text.startswith("\r\x1b[K") and "50/100 frames (50%)" in term.text
    assert "ETA" in term.text and "\n" not in term.text


def test_progress_in_a_log_is_plain_lines():
    import upscale
    log = FakeTerminal(tty=False)
    progress = upscale.Progress("clip.mp4", 0, stream=log)
    progress.last -= upscale.PROGRESS_INTERVAL_LOG
    progress.update(7)
    assert log.text == log.text.strip("\r") and log.text.endswith("\n")
    assert "7 frames" in log.text and "\x1b" not in log.text


def test_shell_loop_run_twice_does_not_upscale_its_own_outputs(ffmpeg, tmp_path):
    make_clip(ffmpeg, tmp_path / "a.mp4", seconds=0.2)
    for _ in range(2):                     # for f in clips/*.mp4; do upscale.py "$f"; done
        for f in sorted(tmp_path.glob("*.mp4")):
            assert run_cli(f, "--scale", "2").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a_fast_x2.mp4"]


def test_an_output_named_with_o_can_be_upscaled_again(ffmpeg, tmp_path):
    first = make_clip(ffmpeg, tmp_path / "a_fast_x2.mp4", seconds=0.2)
    skipped = run_cli(first, "--scale", "2")
    assert skipped.returncode == 0 and "skip:" in skipped.stderr
    assert not (tmp_path / "a_fast_x2_fast_x2.mp4").exists()
    again = run_cli(first, "--scale", "2", "-o", tmp_path / "a_x4.mp4")
    assert again.returncode == 0, again.stderr
    assert video_size(tmp_path / "a_x4.mp4") == tuple(2 * v for v in video_size(first))


@pytest.mark.parametrize("columns", [40, 80, 120])
def test_progress_line_fits_the_terminal_and_keeps_its_figures(monkeypatch, columns):
    import upscale
    monkeypatch.setenv("COLUMNS", str(columns))
    term = FakeTerminal(tty=True)
    name = "a very long file name from a phone, " * 6 + "VID_20260101_120000.mp4"
    progress = upscale.Progress(name, 15000, stream=term)
    progress.start -= 100
    progress.last -= 1
    progress.update(12345)
    line = term.text.replace("\r\x1b[K", "")
    assert len(line) < columns
    assert "12345/15000" in line and "82%" in line and "ETA" in line and "fps" in line
    if columns >= 80:                      # the name gives way, but not all of it
        assert line.startswith(name[:5]) and "..." in line


def run_on_a_terminal(args, columns=100):
    """Run upscale.py with its stderr on a real pseudo-terminal, as when a person runs it;
    returns (exit status, everything it showed)."""
    import os
    import pty
    import select
    import sys
    from conftest import SCRIPT, cli_env
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)],
                            env=cli_env(COLUMNS=str(columns)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        try:
            chunk = os.read(leader, 4096) if ready else b""
        except OSError:              # the terminal closed: the run ended
            chunk = b""
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return proc.wait(timeout=60), seen.decode(errors="replace")


def test_upscaling_on_a_terminal_shows_progress(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="480x270", seconds=5)
    status, seen = run_on_a_terminal([src, "--model", "espcn", "--scale", "2"])
    assert status == 0
    redraws = [r for r in seen.split("\r\x1b[K") if "frames (" in r]
    assert redraws, seen
    assert all("/125 frames (" in r and "ETA" in r and len(r.rstrip()) < 100
               for r in redraws[:-1])


def test_jobs_on_a_terminal_show_each_files_progress(ffmpeg, tmp_path):
    for name in ("a", "b"):
        make_clip(ffmpeg, tmp_path / f"{name}.mp4", size="640x360", seconds=4)
    status, seen = run_on_a_terminal([tmp_path, "--model", "espcn", "--scale", "2",
                                      "--jobs", "2"])
    assert status == 0
    for name in ("a", "b"):
        assert any(line.startswith(f"[{name}.mp4] ") and "frames (" in line and
                   "ETA" in line for line in seen.splitlines()), seen
    assert "a.mp4] a.mp4" not in seen and "b.mp4] b.mp4" not in seen     # the name once


def stream_seconds(ffmpeg, path, stream):
    times = packet_times(ffmpeg, path, stream)
    return float(times[-1] - times[0]) if times else 0.0


def test_frames_makes_a_quick_try_with_its_sound_cut_to_match(ffmpeg, tmp_path):
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=3)
    result = run_cli(src, "--scale", "2", "--frames", "10")
    assert result.returncode == 0, result.stderr
    assert "about 10 frames" in result.stderr
    trial = tmp_path / "clip_fast_x2_first10.mp4"
    assert decoded_frame_count(ffmpeg, trial) == 10
    assert abs(stream_seconds(ffmpeg, trial, "a:0") - 0.4) < 0.05     # not 3 s of sound
    # the whole run afterwards is neither skipped nor confused with the try
    assert run_cli(src, "--scale", "2").returncode == 0
    assert decoded_frame_count(ffmpeg, tmp_path / "clip_fast_x2.mp4") == 75
    assert decoded_frame_count(ffmpeg, trial) == 10


@needs_tensorflow
def test_h264_needs_no_lossless_intermediate_only_room_for_its_own_stream(ffmpeg, tmp_path):
    import sys
    from conftest import SCRIPT, cli_env
    src = make_clip(ffmpeg, tmp_path / "clip.mp4", size="160x120", seconds=3)
    out = tmp_path / "clip_lapsrn_x2.mp4"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(src), "--model", "lapsrn",
                             "--scale", "2", "--codec", "h264"], env=cli_env(),
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:       # the temporary files' size (work folder too), all along
        sizes = []
        try:
            for p in tmp_path.rglob("*"):
                hidden = p.relative_to(tmp_path).parts[0].startswith(".")
                sizes.append(p.stat().st_size if hidden and p.is_file() else 0)
        except FileNotFoundError:        # removed while being listed: look again
            continue
        peak = max(peak, sum(sizes))
    assert proc.returncode == 0, proc.stderr.read()
    # the encoded stream (segments, then joined), then the muxed copy of it (a lossless
    # FFV1 copy of 75 frames of 320x240 would be many times this)
    assert 0 < peak <= 2.2 * out.stat().st_size + 65536
