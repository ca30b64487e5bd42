"""What users' real footage needs from `vdf protect` and `vdf evaluate`: nothing overwritten or left behind,
timestamps kept, rotated / full-range / RGB / odd-sized / 10-bit / alpha sources handled, every stream kept,
and honest messages. Small clips generated with the bundled ffmpeg; `--max-steps 0` where the engine is not
the point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from vs_vdf import samples
from vs_vdf.cli import main
from vs_vdf.evaluation.pipelines import ffmpeg_exe

NO_STEPS = ["--preset", "light", "--targets", "facemesh,headpose", "--max-steps", "0", "--chunk", "3", "--device", "cpu"]
FILTERS = Path(__file__).parent.parent / "filters"


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Phone-like inputs, a few frames each."""
    folder = tmp_path_factory.mktemp("media")
    franck, wolfgang = str(samples.path("franck")), str(samples.path("wolfgang"))
    made = {
        # 8 frames at 24 fps, then 4 frames 1/4 s apart; audio running on after the video; a 0.5 s start.
        "vfr.mp4": ["-i", wolfgang, "-t", "1.5", "-vf", "trim=end_frame=12,scale=320:180,"
                    "setpts='if(lt(N,8),N/24,8/24+(N-7)/4)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                    "-c:a", "copy", "-output_ts_offset", "0.5"],
        "full.mp4": ["-i", franck, "-frames:v", "4", "-vf", "scale=out_range=pc", "-pix_fmt", "yuvj420p",
                     "-color_range", "pc", "-c:v", "libx264", "-crf", "12"],
        "rgb.mkv": ["-i", franck, "-frames:v", "3", "-pix_fmt", "bgr0", "-c:v", "ffv1"],
        "smpte240m.mp4": ["-i", franck, "-frames:v", "3", "-vf", "scale=out_color_matrix=smpte240m",
                          "-colorspace", "smpte240m", "-c:v", "libx264", "-crf", "12"],
        "odd444.mp4": ["-i", franck, "-frames:v", "3", "-vf", "scale=321:257", "-pix_fmt", "yuv444p", "-c:v", "libx264"],
        "odd420.mkv": ["-i", franck, "-frames:v", "3", "-vf", "scale=321:257", "-pix_fmt", "yuv420p", "-c:v", "ffv1"],
        "ten.mp4": ["-i", franck, "-frames:v", "3", "-pix_fmt", "yuv420p10le", "-c:v", "libx264"],
        "alpha.mkv": ["-i", franck, "-frames:v", "3", "-pix_fmt", "yuva420p", "-c:v", "ffv1"],
    }
    for name, args in made.items():
        ffmpeg(*args, str(folder / name))
    for degrees in (90, 180, 270):
        ffmpeg("-display_rotation", str(degrees), "-i", str(folder / "odd444.mp4"), "-c", "copy",
               str(folder / f"rot{degrees}.mp4"))
    subtitles = folder / "s.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:00,200\nhello\n")
    for name, codec in (("streams.mp4", "mov_text"), ("streams.mkv", "srt")):
        ffmpeg("-i", wolfgang, "-i", str(subtitles), "-t", "1", "-vf", "trim=end_frame=4,scale=320:180",
               "-c:v", "libx264", "-c:a", "copy", "-c:s", codec, "-metadata:s:a:0", "language=deu",
               "-metadata:s:s:0", "language=eng", str(folder / name))
    ffmpeg("-ss", "1.3", "-i", wolfgang, "-t", "0.3", "-c", "copy", str(folder / "cut.mp4"))
    return {name: folder / name for name in [*made, "rot90.mp4", "rot180.mp4", "rot270.mp4", "streams.mp4",
                                             "streams.mkv", "cut.mp4"]}


def protect(source: Path, output: Path, *extra: str):
    return CliRunner().invoke(main, ["protect", str(source), "-o", str(output), *NO_STEPS, *extra])


def shown_timestamps(path: Path, kind: str = "video") -> list:
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return sorted(p.pts * stream.time_base for p in container.demux(stream)
                      if p.pts is not None and p.size and not p.is_discard)


def rgb_frames(path: Path) -> np.ndarray:
    """Frames as a viewer sees them (rotation applied), 8-bit RGB."""
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            picture = frame.to_ndarray(format="rgb24")
            frames.append(np.rot90(picture, k=round(frame.rotation / 90)) if frame.rotation else picture)
        return np.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / error)


def stream_facts(path: Path) -> list[tuple]:
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name if s.codec_context else None, s.metadata.get("language"))
                for s in container.streams]


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial" in p.name]


# -- 1. nothing written over an input or another output ------------------------------------------------

@pytest.mark.parametrize("case", ["report_is_input", "report_is_output", "report_exists"])
def test_protect_refuses_report_paths_that_would_destroy_a_file(case, media, tmp_path):
    source = tmp_path / "clip.mp4"
    source.write_bytes(media["full.mp4"].read_bytes())
    output, report = tmp_path / "out.mp4", tmp_path / "report.json"
    if case == "report_is_input":
        report = source
    elif case == "report_is_output":
        report = output
    else:
        report.write_text("keep me")
    before = contents(tmp_path)
    result = protect(source, output, "--report", str(report))
    assert result.exit_code != 0
    assert {"report_is_input": "is the input file", "report_is_output": "name the same file",
            "report_exists": "pass --overwrite"}[case] in result.output
    assert contents(tmp_path) == before


def test_protect_replaces_an_existing_report_only_with_overwrite(media, tmp_path):
    output, report = tmp_path / "out.mp4", tmp_path / "report.json"
    report.write_text("old")
    result = protect(media["full.mp4"], output, "--report", str(report), "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["summary"]["frames"] == 4


@pytest.mark.parametrize("which", ["json_is_clean", "html_is_protected", "json_is_html", "json_exists"])
def test_evaluate_refuses_report_paths_that_would_destroy_a_file(which, media, tmp_path):
    clean, protected = tmp_path / "clean.mp4", tmp_path / "protected.mp4"
    for video in (clean, protected):
        video.write_bytes(media["full.mp4"].read_bytes())
    json_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    if which == "json_is_clean":
        json_path = clean
    elif which == "html_is_protected":
        html_path = protected
    elif which == "json_is_html":
        html_path = json_path
    else:
        json_path.write_text("keep me")
    before = contents(tmp_path)
    result = CliRunner().invoke(main, ["evaluate", str(clean), str(protected), "--json", str(json_path),
                                       "--html", str(html_path), "--frames", "1", "--pipeline", "none",
                                       "--purify", "none", "--device", "cpu"])
    assert result.exit_code != 0
    assert contents(tmp_path) == before


# -- 2. and 7. timestamps: variable frame rate, a non-zero start, a stream-copied cut ------------------

def test_variable_frame_rate_keeps_every_timestamp_and_the_audio_after_the_video(media, tmp_path):
    source, output = media["vfr.mp4"], tmp_path / "out.mp4"
    result = protect(source, output)
    assert result.exit_code == 0, result.output
    shown = shown_timestamps(source)
    assert len(shown) == 12 and shown[0] == pytest.approx(0.5, abs=0.01)
    assert shown_timestamps(output) == shown
    audio = shown_timestamps(source, "audio")
    assert audio[-1] > shown[-1] + 0.1  # the input's audio runs on after its last frame ...
    assert shown_timestamps(output, "audio") == audio  # ... and is kept whole without --frames


def test_frames_option_trims_the_audio_under_the_frames_kept(media, tmp_path):
    output = tmp_path / "out.mp4"
    assert protect(media["vfr.mp4"], output, "--frames", "4").exit_code == 0
    video, audio = shown_timestamps(output), shown_timestamps(output, "audio")
    assert len(video) == 4 and video == shown_timestamps(media["vfr.mp4"])[:4]
    assert audio[-1] < video[-1] + 1 / 24


def test_a_stream_copied_cut_counts_the_frames_a_player_shows(media, tmp_path):
    source, output = media["cut.mp4"], tmp_path / "out.mp4"
    result = protect(source, output)
    assert result.exit_code == 0, result.output
    with av.open(str(source)) as container:
        shown = sum(1 for _ in container.decode(video=0))
    assert 0 < shown < sum(1 for p in av.open(str(source)).demux(video=0) if p.size)  # it has pre-roll
    assert len(shown_timestamps(output)) == shown


# -- 3. rotation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_video_is_protected_as_shown_and_written_upright(degrees, media, tmp_path):
    source, output = media[f"rot{degrees}.mp4"], tmp_path / "out.mp4"
    result = protect(source, output)
    assert result.exit_code == 0, result.output
    assert f"rotated by {degrees} degrees" in result.output
    upright_in, written = rgb_frames(source), rgb_frames(output)
    assert written.shape == upright_in.shape  # what the viewer saw, same orientation and size
    with av.open(str(output)) as container:
        assert next(container.decode(video=0)).rotation == 0
    assert psnr(written, upright_in) > 35


# -- 4. colour range and RGB sources -----------------------------------------------------------------

@pytest.mark.parametrize("name, range_code", [("full.mp4", 2), ("rgb.mkv", 1)])
def test_full_range_and_rgb_sources_keep_their_colours_and_tags(name, range_code, media, tmp_path):
    source, output = media[name], tmp_path / "out.mp4"
    result = protect(source, output)
    assert result.exit_code == 0, result.output
    with av.open(str(output)) as container:
        context = container.streams.video[0].codec_context
        assert context.color_range == range_code
        assert context.colorspace == 6  # BT.601 for SD, never the RGB "matrix" on YUV data
    assert psnr(rgb_frames(output), rgb_frames(source)) > 38  # was 28 dB (washed out) for full range


def test_a_less_common_matrix_is_read_and_written_with_itself(media, tmp_path):
    output = tmp_path / "out.mp4"
    assert protect(media["smpte240m.mp4"], output).exit_code == 0
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.colorspace == 7  # SMPTE 240M, not the 601 fallback
    assert psnr(rgb_frames(output), rgb_frames(media["smpte240m.mp4"])) > 38


def test_the_node_keeps_one_colour_range_for_face_and_faceless_frames(tmp_path):
    import vapoursynth as vs

    import vs_vdf

    mixed = tmp_path / "mixed.mp4"
    ffmpeg("-i", str(samples.path("franck")), "-i", str(samples.path("no_face")), "-filter_complex",
           "[0:v]trim=end_frame=2,setpts=PTS-STARTPTS[a];[1:v]trim=end_frame=2,scale=360:288,setsar=1,"
           "setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1,scale=out_range=pc,format=yuvj420p",
           "-color_range", "pc", "-c:v", "libx264", "-crf", "10", str(mixed))
    clip = vs.core.bs.VideoSource(str(mixed), cachemode=0)
    protected = vs_vdf.protect(clip, preset="light", targets="facemesh,headpose", max_steps=0, chunk=2, device="cpu")
    ranges = [int(protected.get_frame(n).props["_Range"]) for n in range(4)]
    faces = [protected.get_frame(n).props["VdfFace"] for n in range(4)]
    assert faces == [1, 1, 0, 0]
    assert ranges == [vs.RANGE_FULL] * 4
    for n in range(2):  # the face frames are not shifted to limited range (which looked washed out)
        planes = [np.asarray(f[0], dtype=np.float64) for f in (clip.get_frame(n), protected.get_frame(n))]
        assert np.abs(planes[0] - planes[1]).mean() < 1.5


# -- 5. odd sizes, 10 bits, alpha ---------------------------------------------------------------------

@pytest.mark.parametrize("name, notice, picture", [
    ("odd444.mp4", "writing 4:4:4", (321, 257, "yuv444p")),  # keeps every pixel
    ("odd420.mkv", "crops the odd-sized 4:2:0 frames from 321x257 to 320x256", (320, 256, "yuv420p")),
])
def test_odd_frame_sizes_are_written_with_a_notice(name, notice, picture, media, tmp_path):
    output = tmp_path / "out.mp4"
    result = protect(media[name], output)
    assert result.exit_code == 0, result.output
    assert notice in result.output
    with av.open(str(output)) as container:
        context = container.streams.video[0].codec_context
        assert (context.width, context.height, context.pix_fmt) == picture


def test_ten_bit_sources_warn_and_can_stay_ten_bit(media, tmp_path):
    result = protect(media["ten.mp4"], tmp_path / "eight.mp4")
    assert result.exit_code == 0 and "--bit-depth 10 keeps 10 bits" in result.output
    result = protect(media["ten.mp4"], tmp_path / "ten.mp4", "--bit-depth", "10")
    assert result.exit_code == 0, result.output
    with av.open(str(tmp_path / "ten.mp4")) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    assert psnr(rgb_frames(tmp_path / "ten.mp4"), rgb_frames(media["ten.mp4"])) > 38


def test_alpha_is_dropped_with_a_notice(media, tmp_path):
    result = protect(media["alpha.mkv"], tmp_path / "out.mp4")
    assert result.exit_code == 0 and "alpha channel is dropped" in result.output


# -- 6. streams and tracks ----------------------------------------------------------------------------

def test_subtitles_and_track_languages_are_kept(media, tmp_path):
    output = tmp_path / "out.mp4"
    result = protect(media["streams.mp4"], output)
    assert result.exit_code == 0, result.output
    assert stream_facts(output)[1:] == [("audio", "aac", "deu"), ("subtitle", "mov_text", "eng")]
    with av.open(str(output)) as container:
        assert [bytes(p) for p in container.demux(subtitles=0) if p.size]


def test_subtitles_the_container_cannot_carry_are_named_in_a_warning(media, tmp_path):
    output = tmp_path / "out.mp4"
    result = protect(media["streams.mkv"], output)
    assert result.exit_code == 0, result.output
    assert "(subtitle, srt) cannot be carried by mp4" in result.output
    assert stream_facts(output)[1:] == [("audio", "aac", "deu")]
    assert stream_facts(tmp_path / "out.mp4")
    kept = tmp_path / "out.mkv"
    assert protect(media["streams.mkv"], kept).exit_code == 0
    assert [kind for kind, _, _ in stream_facts(kept)] == ["video", "audio", "subtitle"]


# -- 8. output formats, options, disk full, file names ------------------------------------------------

@pytest.mark.parametrize("name", ["x.xyz", "x.webm", "x.gif", "x.avi", "-"])
def test_containers_that_cannot_be_written_correctly_are_refused_before_any_work(name, media, tmp_path):
    os.chdir(tmp_path)
    result = protect(media["full.mp4"], Path(name))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert ("use one of .mp4, .m4v, .mov, .mkv" in result.output) or ("standard output" in result.output)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.mov", "out.mkv", "out.m4v"])
def test_the_accepted_containers_keep_the_timestamps(name, media, tmp_path):
    result = protect(media["vfr.mp4"], tmp_path / name)
    assert result.exit_code == 0, result.output
    assert shown_timestamps(tmp_path / name) == pytest.approx(shown_timestamps(media["vfr.mp4"]), abs=1e-3)


@pytest.mark.parametrize("option, value", [("--crf", "99"), ("--crf", "-5"), ("--max-steps", "-5"),
                                           ("--bitrate", "0"), ("--epsilon", "0.3"), ("--chunk", "0")])
def test_out_of_range_options_are_usage_errors(option, value, media, tmp_path):
    result = CliRunner().invoke(main, ["protect", str(media["full.mp4"]), "-o", str(tmp_path / "o.mp4"), option, value])
    assert result.exit_code == 2 and "Invalid value" in result.output and "Traceback" not in result.output


def test_a_full_disk_is_one_clear_line_and_leaves_nothing(media, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("a small tmpfs cannot be mounted here (needs root)")
    try:
        result = protect(media["streams.mp4"], small / "out.mp4")
        assert result.exit_code == 1
        assert "No space left on device" in result.output and "Traceback" not in result.output
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_file_names_that_are_not_utf8_are_clear_errors(media, tmp_path):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.mp4"))
    odd.write_bytes(media["full.mp4"].read_bytes())
    for source, output in ((odd, tmp_path / "o.mp4"), (media["full.mp4"], odd.with_name("o\udce9.mp4"))):
        result = protect(source, output)
        assert result.exit_code == 1 and "not valid UTF-8" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [odd.name]


# -- 9. signals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_ends_the_run_soon_and_leaves_nothing(signum, media, tmp_path):
    output = tmp_path / "out.mp4"
    command = [str(Path(sys.executable).parent / "vdf"), "protect", str(media["full.mp4"]), "-o", str(output),
               "--preset", "light", "--targets", "facemesh,headpose", "--max-steps", "5000", "--chunk", "4",
               "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert leftovers(tmp_path), "the run never started writing"
    time.sleep(1)  # inside the optimisation of the first chunk, which alone would take minutes
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)  # stops between two steps, not after the chunk
    assert process.returncode == 128 + signum
    assert f"stopped by {signal.Signals(signum).name}" in stderr.decode()
    assert list(tmp_path.iterdir()) == []


# -- 10. smaller ones --------------------------------------------------------------------------------

def test_hevc_in_mp4_gets_the_tag_apple_players_need(media, tmp_path):
    output = tmp_path / "out.mp4"
    assert protect(media["full.mp4"], output, "--codec", "libx265").exit_code == 0
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.codec_tag == "hvc1"


def test_vspipe_resolves_a_relative_input_against_the_callers_folder(media, tmp_path):
    vspipe = Path(sys.executable).parent / "vspipe"
    env = dict(os.environ, PWD=str(media["full.mp4"].parent))
    env.setdefault("XDG_CONFIG_HOME", str(Path(__file__).parent.parent / ".vsconfig"))
    result = subprocess.run([str(vspipe), "--info", str(FILTERS / "protect.vpy"), "-a", "input=full.mp4",
                             "-a", "device=cpu"], cwd=media["full.mp4"].parent, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Frames: 4" in result.stdout


def test_the_end_line_says_what_the_engine_check_found(media, tmp_path):
    result = protect(media["full.mp4"], tmp_path / "out.mp4")
    assert "engine check: disrupted facemesh on 0/4, headpose on 0/4 face frames; 0 frames without a face" in result.output
    assert "protection incomplete on most face frames" in result.output


def test_auto_device_on_a_cpu_says_so_with_the_expected_cost(media, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto does not fall back")
    args = [a for a in NO_STEPS if a not in ("--device", "cpu")]
    result = CliRunner().invoke(main, ["protect", str(media["full.mp4"]), "-o", str(tmp_path / "o.mp4"), *args])
    assert result.exit_code == 0, result.output
    assert "no CUDA GPU found: running on the CPU, about" in result.output
    assert "s per frame at 360x288" in result.output


def test_protect_help_says_what_each_preset_trades():
    text = CliRunner().invoke(main, ["protect", "--help"]).output
    for words in ("light: epsilon 6/255", "balanced: 14/255", "strong: 0.05", "(0, 0.25]"):
        assert words in " ".join(text.split())
