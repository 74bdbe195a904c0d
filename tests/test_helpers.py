"""Fast unit tests of the pure helpers: the `ffmpeg -i` parser on text recorded from ffmpeg
5.1 (Debian 12) and 9.0 (imageio-ffmpeg), time and size arithmetic, names and tables."""
from pathlib import Path
from types import SimpleNamespace

import pytest

import upscale

DATA = Path(__file__).resolve().parent / "data"


def recorded(name):
    return upscale.parse_probe((DATA / f"{name}.txt").read_text())


@pytest.mark.parametrize("version", ["ffmpeg5.1", "ffmpeg9"])
def test_probe_reads_a_rotated_quicktime_file_with_two_audio_streams(version):
    info = recorded(f"{version}_phone_rot")
    assert info.format.startswith("mov,mp4") and info.duration == 2.0
    assert info.display_matrix
    assert [(s.kind, s.codec, s.language) for s in info.streams] == [
        ("video", "h264", ""), ("audio", "aac", ""), ("audio", "aac", "fra")]
    video = info.video[0]
    assert video.pix_fmt == "yuv420p"
    assert video.color["range"] == "tv" and video.color["space"] == "bt709"
    assert info.streams[1].dispositions == ("default",) and info.streams[2].dispositions == ()
    assert info.tags["title"] == "Holiday"


@pytest.mark.parametrize("version", ["ffmpeg5.1", "ffmpeg9"])
def test_probe_reads_matroska_stream_end_times_and_subtitles(version):
    info = recorded(f"{version}_film")
    assert info.format == "matroska,webm" and info.duration == 3.01
    assert not info.display_matrix
    assert [(s.kind, s.codec, s.end) for s in info.streams] == [
        ("video", "h264", 2.002), ("subtitle", "subrip", 1.0), ("audio", "opus", 3.008)]
    assert info.streams[1].language == "eng"
    assert "encoder" in info.tags and "duration" not in info.tags     # a stream's, not ours


@pytest.mark.parametrize("rest,size", [
    (", yuv420p(tv, top first), 720x576 [SAR 16:15 DAR 4:3], 25 fps", (720, 576, 16 / 15)),
    (" (High), yuv420p(progressive), 96x64 [SAR 1:1 DAR 3:2], SAR 32:27 DAR 16:9, 25 fps",
     (96, 64, 32 / 27)),
    (", yuv420p(progressive), 1920x1080, 25 fps", (1920, 1080, 1.0)),
    (", none", (0, 0, 1.0))])
def test_the_shown_pixel_shape_is_the_containers_where_it_gives_one(rest, size):
    assert upscale.parse_video_size(rest) == pytest.approx(size)


@pytest.mark.parametrize("rest,order", [
    (", yuv420p(tv, top first), 720x576 [SAR 16:15 DAR 4:3], 25 fps", "top first"),
    (", yuv420p(bottom first), 720x480", "bottom first"),
    (", yuv420p(tv, top coded first (swapped)), 720x480", "top coded first"),
    (" (High), yuv420p(tv, bt709, progressive), 1920x1080", ""),
    (" (Main), yuv420p(tv, bt709), 1280x720", "")])
def test_field_order_is_read_from_the_video_stream_line(rest, order):
    assert upscale.parse_field_order(rest) == order


def test_both_ffmpeg_versions_read_the_same():
    for name in ("phone_rot", "film"):
        assert recorded(f"ffmpeg5.1_{name}") == recorded(f"ffmpeg9_{name}")


@pytest.mark.parametrize("seconds,text", [(0, "0:00"), (59.9, "0:59"), (61, "1:01"),
                                          (3600, "1:00:00"), (7384, "2:03:04"), (-5, "0:00")])
def test_eta_is_minutes_and_seconds_then_hours(seconds, text):
    assert upscale.format_eta(seconds) == text


@pytest.mark.parametrize("width", [3, 4, 10, 11, 40])
def test_shorten_cuts_the_middle_to_the_width(width):
    text = "VID_20260101_120000_holiday_at_the_lake.mp4"
    short = upscale.shorten(text, width)
    assert len(short) == min(width, len(text))
    if width > 4:
        assert short.startswith(text[0]) and short.endswith(text[-1]) and "..." in short


def test_summary_names_the_failures():
    assert upscale.summary(2, 1, []) == "2 done, 1 skipped, 0 failed"
    assert upscale.summary(0, 0, ["a.mp4", "b.mkv"]) == \
        "0 done, 0 skipped, 2 failed: a.mp4, b.mkv"


def settings(**changes):
    base = dict(method=upscale.METHODS["fsrcnn"], size=upscale.SizeRequest("scale", 4),
                codec=upscale.CODECS["mp4v"])
    return upscale.Settings(**dict(base, **changes))


def fingerprint(settings, width=64, height=48):
    plan = upscale.plan_frames(settings.size, settings.method, width, height)
    return settings.fingerprint(plan)


def test_fingerprint_holds_what_decides_the_output_and_nothing_else():
    plain = fingerprint(settings())
    assert plain.startswith("model=fsrcnn scale=4 codec=mp4v weights=")
    assert fingerprint(settings(tile=64, device="auto", jobs=2)) == plain
    h264 = fingerprint(settings(codec=upscale.CODECS["h264"], crf=20, preset="slow"))
    assert "crf=20 preset=slow" in h264
    assert "weights" not in fingerprint(settings(method=upscale.METHODS["cubic"]))
    assert "deinterlace=field" in fingerprint(settings(deinterlace="field"))


def test_settings_differences_name_each_changed_setting():
    made = "model=fsrcnn scale=4 codec=mp4v"
    asked = "model=espcn scale=4 codec=h264 crf=18"
    assert upscale.settings_differences(made, asked) == [
        "model fsrcnn, asked espcn", "codec mp4v, asked h264", "crf -, asked 18"]
    assert upscale.settings_differences(made, made) == []


def test_an_existing_output_matches_only_the_same_settings_and_the_same_source():
    made = "model=fast scale=2 codec=h264 source=100:aa"
    assert upscale.output_mismatch(made, made) == ""
    assert "another source file" in upscale.output_mismatch(made, made.replace("aa", "bb"))
    assert upscale.output_mismatch(made, made.replace("fast", "hq")).startswith(
        "with other settings (model fast, asked hq)")
    assert "records no upscale.py settings" in upscale.output_mismatch(None, made)


def test_an_output_of_a_version_that_recorded_no_source_is_judged_by_its_settings():
    assert upscale.output_mismatch("model=fast scale=2 codec=h264",
                                   "model=fast scale=2 codec=h264 source=100:aa") == ""


def test_temporary_names_say_whose_they_are_and_stay_short(tmp_path):
    final = tmp_path / ("x" * 250 + ".mp4")
    temp = upscale.temp_name(final, "video.mp4")
    match = upscale.TEMP_RE.match(temp.name)
    assert match and int(match[1]) > 0 and match[2] == upscale.HOST
    assert len(temp.name) < 100 and temp.name.endswith(".video.mp4")


@pytest.mark.parametrize("suffix,name", [(".mp4", "mp4"), (".M4V", "mp4"), (".mov", "mov"),
                                         (".mkv", "mkv"), (".avi", None)])
def test_containers_are_found_by_extension(suffix, name):
    found = upscale.container_for_extension(suffix)
    assert (found.name if found else None) == name


def test_lossless_ffv1_goes_to_matroska_by_default():
    assert [c.name for c in upscale.containers_for(upscale.CODECS["ffv1"])] == ["mkv"]
    assert upscale.default_extension(settings(codec=upscale.CODECS["ffv1"])) == ".mkv"
    assert upscale.default_extension(settings()) == ".mp4"
    assert upscale.default_extension(settings(format="mov")) == ".mov"
    assert upscale.default_extension(settings(codec=upscale.CODECS["vp9"])) == ".webm"
    assert upscale.default_extension(settings(codec=upscale.CODECS["av1"])) == ".mp4"


@pytest.mark.parametrize("fmt,codec", [("", "h264"), ("mp4", "h264"), ("mkv", "h264"),
                                       ("mov", "h264"), ("webm", "vp9")])
def test_the_codec_not_asked_for_is_h264_unless_the_container_cannot_hold_it(fmt, codec):
    assert upscale.default_codec(fmt) == codec


@pytest.mark.parametrize("codec,preset,speed", [
    ("h264", "superfast", ["-preset", "superfast"]), ("h265", "slow", ["-preset", "slow"]),
    ("av1", "ultrafast", ["-preset", "12"]), ("av1", "superfast", ["-preset", "11"]),
    ("av1", "placebo", ["-preset", "0"]),
    ("vp9", "superfast", ["-deadline", "realtime", "-cpu-used", "7"]),
    ("vp9", "medium", ["-deadline", "good", "-cpu-used", "4"])])
def test_each_encoder_gets_its_own_options_for_a_crf_and_x264s_preset_names(codec, preset,
                                                                            speed):
    args = upscale.CODECS[codec].encoder_args(30, preset)
    assert args[:len(upscale.CODECS[codec].ffmpeg_args)] == list(upscale.CODECS[codec].ffmpeg_args)
    assert args[args.index("-crf") + 1] == "30" and args[-len(speed):] == speed


def test_every_piped_encoder_has_a_speed_for_every_preset_and_its_own_crf_scale():
    for codec in upscale.CODECS.values():
        if codec.piped and codec.speeds is not None:
            assert len(codec.speeds) == len(upscale.X264_PRESETS), codec.name
        if codec.piped:
            assert 0 < codec.crf <= codec.crf_max, codec.name


def parsed_settings(*argv):
    return upscale.settings_from_args(upscale.build_parser().parse_args(["in.mp4", *argv]))


def test_a_webm_output_is_vp9_at_its_own_default_crf():
    made = parsed_settings("-o", "out.webm")
    assert (made.codec.name, made.format, made.crf) == ("vp9", "webm", upscale.CODECS["vp9"].crf)
    assert parsed_settings("--codec", "av1", "-o", "out.webm").codec.name == "av1"
    assert parsed_settings().crf == 18 and parsed_settings("--codec", "av1").crf == 20


@pytest.mark.parametrize("argv,allowed", [(("--crf", "52"), False),
                                          (("--codec", "av1", "--crf", "40"), True),
                                          (("--codec", "vp9", "--crf", "63"), True),
                                          (("--codec", "av1", "--crf", "64"), False)])
def test_the_crf_range_is_the_codecs_own(argv, allowed):
    if allowed:
        assert parsed_settings(*argv).crf == int(argv[-1])
    else:
        with pytest.raises(upscale.UsageError, match="--crf for"):
            parsed_settings(*argv)


@pytest.mark.parametrize("argv", [("--codec", "h264", "-o", "out.webm"),
                                  ("--codec", "av1", "-o", "out.mov"),
                                  ("--codec", "vp9", "--format", "mov")])
def test_a_codec_the_container_cannot_hold_is_refused_naming_one_that_can(argv):
    with pytest.raises(upscale.UsageError, match="cannot go into .*give an .mp4"):
        parsed_settings(*argv)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_taps_sum_to_one_and_are_symmetric(scale):
    taps, anchor = upscale.bicubic_taps(scale)
    assert abs(taps.sum() - 1) < 1e-6
    assert list(taps) == list(taps[::-1])
    assert 0 <= anchor < len(taps)


@pytest.mark.parametrize("stem,is_output", [("clip_fsrcnn_x4", True),
                                            ("clip_fsrcnn-opencv_x2_first100", True),
                                            ("clip_x4", False), ("my_fsrcnn_notes", False)])
def test_outputs_and_quick_tries_are_recognised_by_name(stem, is_output):
    assert bool(upscale.OUTPUT_NAME_RE.search(stem)) == is_output


def test_a_nominal_rate_of_1000_is_not_believed_over_the_packets():
    assert upscale.believable_rate(1000.0, 28.0) == 28.0
    assert upscale.believable_rate(25.0, 25.3) == 25.0          # a believable one stays
    assert upscale.believable_rate(0.0, 0.0) == 0.0


def test_frame_count_comes_from_the_best_evidence():
    # an MP4's sample count is exact; Matroska's is its length times the believable rate
    assert upscale.frame_count_hint(250, 10.0, 25.0, exact=True) == 250
    assert upscale.frame_count_hint(1072, 1.07, 28.0, exact=False) == 30
    assert upscale.frame_count_hint(40, 0.0, 0.0, exact=False) == 40


def test_times_on_the_sources_rate_grid_are_written_on_it():
    webm = [0, 33, 67, 100, 133, 167]                  # 30/1 in whole milliseconds
    assert upscale.rate_grid(webm, 30.0) == (90000, 3000)
    ntsc = [k * 1001 / 30 for k in range(6)]
    assert upscale.rate_grid(ntsc, 30000 / 1001) == (90000, 3003)
    assert upscale.rate_grid([0, 100, 190, 280], 10.0) is None      # uneven: kept as is
    assert upscale.rate_grid(webm, 1000.0) is None


def test_measured_rate_is_frames_over_the_time_they_span():
    assert upscale.measured_rate([0.0, 0.5, 1.0, 1.5]) == 2.0
    assert upscale.measured_rate([0.2]) == 0.0


# --- Muxing: pure functions of what the probe said ------------------------------------------

def stream(kind, index, codec, **fields):
    return upscale.Stream(index, kind, codec, **fields)


def test_colour_of_a_reencode_follows_the_source_and_rounds():
    bt709_full = stream("video", 0, "h264", color={"space": "bt709", "range": "pc",
                                                   "primaries": "bt709", "transfer": "bt709"})
    vfilter, tags = upscale.color_args(bt709_full, reencode=True)
    assert "out_color_matrix=bt709" in vfilter[1] and "out_range=pc" in vfilter[1]
    assert "accurate_rnd" in vfilter[1]
    assert tags == ["-color_primaries", "bt709", "-color_trc", "bt709",
                    "-colorspace", "bt709", "-color_range", "pc"]


def test_colour_of_a_videowriter_stream_is_tagged_as_what_it_is():
    # cv2.VideoWriter always writes BT.601 limited range, whatever the source was
    bt709 = stream("video", 0, "h264", color={"space": "bt709", "range": "tv"})
    vfilter, tags = upscale.color_args(bt709, reencode=False)
    assert vfilter == [] and tags == ["-colorspace", "smpte170m", "-color_range", "tv"]


def test_colour_of_an_untagged_source_defaults_to_bt601_limited():
    vfilter, tags = upscale.color_args(None, reencode=True)
    assert "out_color_matrix=bt601" in vfilter[1]
    assert tags == ["-colorspace", "smpte170m", "-color_range", "tv"]


def probe_of(*streams):
    return upscale.Probe(list(streams))


def test_stream_plan_copies_what_the_container_carries_and_says_what_it_cannot():
    info = probe_of(stream("video", 0, "h264"), stream("audio", 1, "pcm_s16le"),
                    stream("audio", 2, "aac", title="Commentary"),
                    stream("subtitle", 3, "subrip"), stream("subtitle", 4, "hdmv_pgs_subtitle"))
    args, notes = upscale.stream_plan(info, upscale.CONTAINERS["mp4"])
    assert args[args.index("-c:a:0") + 1] == "aac"                     # PCM: re-encoded
    assert args[args.index("-c:a:1") + 1] == "copy"
    assert "handler_name=Commentary" in args
    assert args[args.index("-c:s:0") + 1] == "mov_text"                # text: converted
    assert "1:4" not in args                                          # pictures: dropped
    assert len(notes) == 2 and "AAC" in notes[0] and "dropped" in notes[1]


def test_stream_plan_into_webm_makes_other_audio_opus_and_text_subtitles_webvtt():
    info = probe_of(stream("video", 0, "h264"), stream("audio", 1, "aac"),
                    stream("audio", 2, "vorbis"), stream("subtitle", 3, "subrip"),
                    stream("subtitle", 4, "dvd_subtitle"), stream("attachment", 5, "ttf"))
    args, notes = upscale.stream_plan(info, upscale.CONTAINERS["webm"])
    assert args[args.index("-c:a:0") + 1] == "libopus"
    assert args[args.index("-c:a:1") + 1] == "copy"
    assert args[args.index("-c:s:0") + 1] == "webvtt" and "1:4" not in args and "1:5" not in args
    assert len(notes) == 2 and "Opus" in notes[0] and "dropped" in notes[1]


def test_stream_plan_into_matroska_keeps_everything_as_it_is():
    info = probe_of(stream("video", 0, "h264"), stream("audio", 1, "pcm_s16le"),
                    stream("subtitle", 2, "hdmv_pgs_subtitle"), stream("attachment", 3, "ttf"))
    args, notes = upscale.stream_plan(info, upscale.CONTAINERS["mkv"])
    assert args[args.index("-c:a:0") + 1] == "copy" and args[args.index("-c:s:0") + 1] == "copy"
    assert ["-map", "1:3", "-map_metadata:s:t:0", "1:s:3"] == \
        args[args.index("1:3") - 1:args.index("1:3") + 3]
    assert notes == []


def test_stream_plan_into_matroska_converts_mp4_subtitles_and_drops_what_it_cannot_hold():
    info = probe_of(stream("video", 0, "h264"), stream("subtitle", 1, "mov_text"),
                    stream("subtitle", 2, "dvb_teletext"))
    args, notes = upscale.stream_plan(info, upscale.CONTAINERS["mkv"])
    assert args[args.index("-c:s:0") + 1] == "subrip" and "1:2" not in args
    assert len(notes) == 1 and "dvb_teletext" in notes[0] and ".mkv" not in notes[0]


def test_stream_plan_into_quicktime_reencodes_flac_and_opus():
    info = probe_of(stream("video", 0, "h264"), stream("audio", 1, "flac"),
                    stream("audio", 2, "opus"), stream("audio", 3, "pcm_s24le"))
    args, notes = upscale.stream_plan(info, upscale.CONTAINERS["mov"])
    assert [args[args.index(f"-c:a:{k}") + 1] for k in range(3)] == ["aac", "aac", "copy"]
    assert len(notes) == 2


def test_stream_plan_re_encodes_converts_or_drops_what_the_muxer_refused():
    info = probe_of(stream("video", 0, "h264"), stream("audio", 1, "adpcm_ima_qt"),
                    stream("audio", 2, "aac"), stream("subtitle", 3, "ass"),
                    stream("subtitle", 4, "dvd_subtitle"), stream("attachment", 5, "ttf"))
    args, notes = upscale.stream_plan(info, upscale.CONTAINERS["mkv"], refused={1, 3, 4, 5})
    assert args[args.index("-c:a:0") + 1] == "aac" and args[args.index("-c:a:1") + 1] == "copy"
    assert args[args.index("-c:s:0") + 1] == "subrip"                  # text: converted
    assert "1:4" not in args and "1:5" not in args and "-c:s:1" not in args
    assert len(notes) == 3 and all("MKV" in note for note in notes)


def mux_job(tmp_path, info, settings, out_name):
    plan = upscale.plan_frames(settings.size, settings.method, 64, 48)
    (tmp_path / "src.mp4").write_bytes(b"a source")     # what its identity is read from
    return upscale.Job(tmp_path / "src.mp4", info, "as decoded", plan, tmp_path / out_name)


def test_mux_command_shifts_a_late_video_records_the_settings_and_cuts_a_try(tmp_path):
    info = probe_of(stream("video", 0, "h264"), stream("audio", 1, "aac"))
    settings = upscale.Settings(upscale.METHODS["fast"], upscale.SizeRequest("scale", 2),
                                upscale.CODECS["h264"])
    job = mux_job(tmp_path, info, settings, "out.mp4")
    command, notes = upscale.mux_command("ffmpeg", job, settings, tmp_path / "v.mp4",
                                         tmp_path / "out.mp4", 0.5, 2.0)
    assert command[command.index("-itsoffset") + 1] == "0.500000"
    assert command.index("-itsoffset") < command.index(str(tmp_path / "v.mp4"))
    assert command[command.index("-c:v") + 1] == "copy"               # piped: already final
    assert f"{upscale.SETTINGS_TAG}={settings.fingerprint(job.plan)} source=8:" in " ".join(
        command)
    assert command[command.index("-f") + 1] == "mp4"
    assert command[command.index("-t") + 1] == "2.000000"
    assert command[-1] == str(tmp_path / "out.mp4") and notes == []


def test_mux_command_reencodes_ffv1_keeping_every_frame_time(tmp_path):
    info = probe_of(stream("video", 0, "h264"))
    settings = upscale.Settings(upscale.METHODS["fast"], upscale.SizeRequest("scale", 2),
                                upscale.CODECS["ffv1"])
    job = mux_job(tmp_path, info, settings, "out.mkv")
    command, _ = upscale.mux_command("ffmpeg", job, settings, tmp_path / "v.mp4",
                                     tmp_path / "out.mkv")
    assert command[command.index("-c:v") + 1] == "ffv1"
    at = command.index("-fps_mode")
    assert command[at:at + 4] == list(upscale.KEEP_FRAME_TIMES)
    assert "-itsoffset" not in command and "-t" not in command


def test_output_names_say_the_model_and_the_size_asked(tmp_path):
    settings = upscale.Settings(upscale.METHODS["fast"], upscale.SizeRequest("scale", 2),
                                upscale.CODECS["h264"])
    assert upscale.output_path_for(tmp_path / "clip.mov", settings, "x1.5").name == \
        "clip_fast_x1.5.mp4"
    assert upscale.output_path_for(tmp_path / "p.jpeg", settings, "1080p").name == \
        "p_fast_1080p.jpg"
    tried = upscale.dataclasses.replace(settings, frames=10, output_dir=tmp_path / "out")
    assert upscale.output_path_for(tmp_path / "clip.mp4", tried, "x2") == \
        tmp_path / "out" / "clip_fast_x2_first10.mp4"


@pytest.mark.skipif(not upscale.reads_tensorflow(), reason="an OpenCV outside requirements.txt")
def test_the_installed_opencv_can_run_every_network():
    # requirements.txt keeps OpenCV below 5.1, which dropped the TensorFlow importer.
    assert upscale.opencv_problem(upscale.METHODS.values()) == ""


# OpenCV 5.1's cv2.dnn as far as the check looks: no readNetFromTensorflow.
OPENCV51 = SimpleNamespace(__version__="5.1.0", dnn_superres=object(),
                           dnn=SimpleNamespace(readNetFromONNX=object()))


def test_an_opencv_without_the_tensorflow_importer_runs_the_networks_that_translate():
    methods = [upscale.METHODS[m] for m in ("fast", "hq", "fsrcnn", "fsrcnn-opencv",
                                            "fsrcnn-small", "espcn", "cubic", "ffmpeg")]
    assert upscale.opencv_problem(methods, OPENCV51) == ""


def test_an_opencv_without_the_tensorflow_importer_names_what_it_cannot_run_and_the_fix():
    problem = upscale.opencv_problem([upscale.METHODS[m] for m in ("fast", "lapsrn", "edsr")],
                                     OPENCV51)
    assert "5.1.0" in problem and "lapsrn, edsr" in problem and "requirements.txt" in problem
    assert "cannot run fast" not in problem


def test_compare_leaves_out_by_default_what_this_opencv_cannot_run():
    assert upscale.default_compare_methods(OPENCV51).split(",") == [
        m for m in upscale.COMPARE_METHODS if m not in ("lapsrn", "edsr")]
    installed = upscale.default_compare_methods().split(",")
    assert installed == list(upscale.COMPARE_METHODS) or not upscale.reads_tensorflow()


def test_an_opencv_without_the_contrib_modules_is_named_with_its_fix():
    plain = SimpleNamespace(__version__="5.0.0", dnn=SimpleNamespace(readNetFromTensorflow=1))
    assert "dnn_superres" in upscale.opencv_problem([upscale.METHODS["fast"]], plain)
    assert upscale.opencv_problem([upscale.METHODS["cubic"]], plain) == ""


def test_hdr10_metadata_is_written_in_each_encoders_own_units():
    hdr = {"primaries": {"r": (0.68, 0.32), "g": (0.265, 0.69), "b": (0.15, 0.06)},
           "white": (0.3127, 0.329), "luminance": (0.0001, 1000.0), "light": (1000, 400)}
    assert upscale.hdr_params("-x265-params", **hdr) == (
        "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
        "L(10000000,1):max-cll=1000,400")
    assert upscale.hdr_params("-svtav1-params", **hdr) == (
        "mastering-display=G(0.2650,0.6900)B(0.1500,0.0600)R(0.6800,0.3200)"
        "WP(0.3127,0.3290)L(1000.0000,0.0001):content-light=1000,400")
    args = upscale.CODECS["h265"].encoder_args(18, "superfast", True, hdr)
    assert args[args.index("-x265-params") + 1].startswith("log-level=error:master-display=")
    assert args.count("-x265-params") == 1


@pytest.mark.parametrize("name,codec,advice", [
    ("still.mp4", "png", "name it .png"), ("still.mov", "mjpeg", "name it .jpg"),
    ("scan.mkv", "jpeg2000", "name it .jp2"), ("sky.exr", "exr", "does not read (exr)"),
    ("sky.png", "png", "does not read (png)")])
def test_a_picture_given_as_a_video_is_renamed_only_to_an_extension_it_lacks(name, codec,
                                                                             advice):
    assert advice in upscale.misnamed_picture_advice(name, codec)


@pytest.mark.parametrize("text,seconds", [
    ("2024-05-01T10:30:00.000000Z", 3797404200), ("2024-05-01T12:30:00+02:00", 3797404200),
    ("2024-05-01 10:30:00", 3797404200), ("1904-01-01T00:00:00Z", None), ("yesterday", None),
    ("", None)])
def test_creation_seconds_are_mp4s_clock_of_the_sources_time(text, seconds):
    info = upscale.Probe([], tags={"creation_time": text} if text else {})
    assert upscale.creation_seconds(info) == seconds


def test_sidecar_subtitles_are_those_named_after_the_video_and_no_longer_video(tmp_path):
    for name in ("ep.mkv", "ep.srt", "ep.EN.SRT", "ep.fr.forced.ass", "ep.vtt.txt", "ep2.srt",
                 "ep.cut.mkv", "ep.cut.srt", "ep.cut.de.srt", "ep_notes.srt"):
        (tmp_path / name).write_text("x")
    found = upscale.sidecar_subtitles(tmp_path / "ep.mkv")
    assert sorted(found.values()) == [".EN.SRT", ".fr.forced.ass", ".srt"]
    assert sorted(upscale.sidecar_subtitles(tmp_path / "ep.cut.mkv").values()) == [
        ".de.srt", ".srt"]


def test_an_ffmpeg_failure_is_told_by_its_cause_not_by_what_followed_from_it():
    stderr = ("[libopus @ 0x55d1a2] Invalid channel layout 5.1(side) for specified mapping "
              "family -1.\n[aost#0:0/libopus @ 0x55d1b3] [enc:libopus @ 0x55d1c4] Error while "
              "opening encoder - maybe incorrect parameters\n[out#0/webm @ 0x55d1d5] Nothing "
              "was written into output file, because at least one of its streams received "
              "no packets.\n")
    assert upscale.failure_detail(1, stderr) == \
        "Invalid channel layout 5.1(side) for specified mapping family -1."
    assert upscale.failure_detail(1, "just this\n") == "just this"
    assert upscale.failure_detail(1, "") == "exit status 1"
    assert "SIGKILL" in upscale.failure_detail(-9, "whatever")
