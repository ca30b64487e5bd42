"""`vdf protect INPUT -o OUTPUT`: decode (bestsource), protect (the node), encode (PyAV) with the other streams."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from pathlib import Path

import click

from ..engine.targets import TARGETS
from ..engine.chunks import DEFAULT_CHUNK, SCENE_SIMILARITY, summarise
from ..engine.presets import PRESETS
from ..engine.protector import METHODS
from ..media.writer import BIT_DEPTHS, CODECS, CONTAINERS, CRF_RANGE
from .paths import check_outputs
from .signals import stop_on_signals

_LIGHT, _BALANCED, _STRONG = PRESETS["light"], PRESETS["balanced"], PRESETS["strong"]
PRESET_HELP = (  # from the presets themselves, so the help cannot drift from them
    f"light: epsilon {round(_LIGHT.epsilon * 255)}/255, up to {_LIGHT.max_steps} steps a frame, every frame kept at "
    f"PSNR >= {_LIGHT.psnr_floor:g} dB (the least visible; it turns the head pose, rarely moves the landmarks); "
    f"balanced: {round(_BALANCED.epsilon * 255)}/255, up to {_BALANCED.max_steps} steps, every frame kept at "
    f"PSNR >= {_BALANCED.psnr_floor:g} dB; strong: {_STRONG.epsilon:g}, no PSNR floor (the change can be "
    f"visible), each chunk's first frame attacked up to {_STRONG.max_steps} steps with a harder check, the frames "
    "after it made to hide the face from the detector (their landmarks left alone); strong-landmarks: strong "
    "attacking every frame's landmarks instead (the slowest).")
FRAMES_IN_FLIGHT = 4  # decoded, protected frames waiting for the encoder


def _bitrate(value: str | None) -> int | None:
    if value is None:
        return None
    units = {"k": 1_000, "m": 1_000_000}
    text = value.strip().lower()
    try:
        bits = int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{value!r} is not a bitrate like 2M or 800k", param_hint="--bitrate") from None
    if bits <= 0:
        raise click.BadParameter(f"{value!r}: a bitrate must be positive", param_hint="--bitrate")
    return bits


@click.command("protect")
@click.argument("sources", metavar="INPUT...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help=f"The protected video to write ({', '.join(CONTAINERS)}); with a folder or several inputs, "
                   "the folder to write them (and a report for each) into.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="balanced", show_default=True, help=PRESET_HELP)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--method", type=click.Choice(list(METHODS)), default="vdf", show_default=True)
@click.option("--targets", help=f"Comma-separated models to attack (default: all but the transfer checks, plus the attackers' own "
                                    "models added with `vdf models add`). "
                                f"Known: {', '.join(TARGETS)}.")
@click.option("--epsilon", type=click.FloatRange(0, 0.25, min_open=True),
              help="L-infinity bound in (0, 0.25], pixel values being 0..1 (default: the preset's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--chunk", type=click.IntRange(1, 256), default=DEFAULT_CHUNK, show_default=True, help="Lookahead window in frames.")
@click.option("--max-steps", type=click.IntRange(min=0), help="Optimisation steps per frame at most (default: the preset's).")
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A BiSeNet face-parsing checkpoint (79999_iter.pth) to attack as well, for this run only "
                   "(`vdf models add` keeps one for every run).")
@click.option("--codec", type=click.Choice(CODECS), default="libx264", show_default=True)
@click.option("--crf", type=click.FloatRange(*CRF_RANGE), default=18, show_default=True,
              help="Constant rate factor of the lossy encode. The engine encodes each chunk the same way so the "
                   "preset's PSNR floor holds on the written file; a lossier encode leaves less room for the change.")
@click.option("--bitrate", help="Target bitrate instead of a CRF, e.g. 2M.")
@click.option("--lossless", is_flag=True, help="Lossless 4:4:4 output instead of the lossy default.")
@click.option("--bit-depth", type=click.Choice([str(d) for d in BIT_DEPTHS]), default="8", show_default=True,
              help="Bits per sample of the output (10 keeps a 10-bit source's depth).")
@click.option("--frames", "limit", type=click.IntRange(min=1), help="Only the first N frames (and the audio under them).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT and the report if they exist.")
@click.option("--report", type=click.Path(path_type=Path), help="Write per-frame statistics and the options as JSON.")
@click.option("--workers", type=click.IntRange(min=1), help="Protect the chunks on N Ray workers (a local Ray instance "
                                                          "is started for the run unless --ray-address is given).")
@click.option("--ray-address", help="Join an existing Ray cluster (for example ray://head:10001 or auto).")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads per chunk on the CPU (default 1); this "
              "process protects cores / THREADS chunks at once. Output is identical for equal --threads.")
def protect_command(sources: tuple[Path, ...], output: Path, preset: str, device: str, method: str,
                    targets: str | None, epsilon: float | None, seed: int, chunk: int, max_steps: int | None,
                    checkpoint: Path | None, codec: str, crf: float, bitrate: str | None, lossless: bool,
                    bit_depth: str, limit: int | None, overwrite: bool, report: Path | None, workers: int | None,
                    ray_address: str | None, threads: int | None) -> None:
    """Protect the faces in INPUT and write OUTPUT (H.264 yuv420p CRF 18 unless told otherwise).

    INPUT may be a folder (every video directly inside it) or several files; OUTPUT is then a folder, each
    video gets a report beside it, and videos already protected with the same settings are skipped, so an
    interrupted batch resumes. Nothing is written over an input, and outputs and reports appear only when
    complete.
    """
    from ..engine.protector import resolve_device
    from ..engine.targets import parse as parse_targets
    from ..media.writer import Encoding
    from ..node import engines

    encoding = Encoding(codec, crf, _bitrate(bitrate), lossless, bit_depth=int(bit_depth))
    resolved = resolve_device(device)
    try:
        parse_targets(targets)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--targets") from None
    options = {"preset": preset, "device": device, "method": method, "targets": targets, "epsilon": epsilon,
               "seed": seed, "chunk": chunk, "max_steps": max_steps, "checkpoint": str(checkpoint) if checkpoint else None,
               "delivery": _delivery(encoding)}
    batch = len(sources) > 1 or sources[0].is_dir()
    if batch and report is not None:
        raise click.UsageError("--report names one file; with several inputs each video gets its report beside it")
    pool_size = workers or (1 if ray_address else None)
    job = _Job(options, encoding, limit, overwrite, announce_cpu=device == "auto" and resolved.type == "cpu")
    with stop_on_signals() as stop:
        job.stop = stop
        if pool_size is not None:
            from ..cluster import WorkerPool

            threads = threads or 1  # each worker's; recorded in the report's options below
            click.echo(f"starting {pool_size} Ray worker(s){f' on {ray_address}' if ray_address else ''}", err=True)
            job.pool = WorkerPool(pool_size, {k: v for k, v in options.items() if k != "chunk"} |
                                  {"similarity": SCENE_SIMILARITY}, address=ray_address, threads=threads)
        job.options["threads"] = threads if job.pool is not None else engines(device, threads)[1]
        try:
            if batch:
                _protect_many(job, sources, output)
            else:
                job.protect_file(sources[0], output, report)
        finally:
            if job.pool is not None:
                job.pool.close()


def _delivery(encoding) -> dict | None:
    """The output encode as the engine measures it (None when lossless: it adds no error)."""
    if encoding.lossless:
        return None
    return {"codec": encoding.codec, "crf": encoding.crf if encoding.bitrate is None else None,
            "bitrate": encoding.bitrate, "preset": encoding.preset}


def _protect_many(job: "_Job", sources: tuple[Path, ...], folder: Path) -> None:
    """Every input into ``folder``, skipping the ones already done; fails at the end if any failed."""
    from .batch import inputs_of, is_done, output_for

    if folder.exists() and not folder.is_dir():
        raise click.ClickException(f"-o/--output {folder} is a file; with several inputs it must be a folder")
    if not folder.parent.is_dir():
        raise click.ClickException(f"cannot write into {folder}: the folder {folder.parent} does not exist")
    folder.mkdir(exist_ok=True)
    files = inputs_of(sources)
    if not files:
        raise click.ClickException(f"no videos in {', '.join(map(str, sources))}")
    settings = {"options": job.options, "encoding": vars(job.encoding), "frames_limit": job.limit}
    done = skipped = 0
    failed: list[str] = []
    for number, source in enumerate(files, 1):
        video, report = output_for(source, folder)
        if is_done(video, report, source, settings):
            click.echo(f"[{number}/{len(files)}] {source.name}: already protected, skipped", err=True)
            skipped += 1
            continue
        click.echo(f"[{number}/{len(files)}] {source.name} -> {video}", err=True)
        try:
            job.protect_file(source, video, report, overwrite=True, label=source.name)
            done += 1
        except click.ClickException as exc:
            click.echo(f"error: {source.name}: {exc.format_message()}", err=True)
            failed.append(source.name)
    click.echo(f"batch: {len(files)} videos: {done} protected, {skipped} skipped (already done), "
               f"{len(failed)} failed", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(files)} videos failed: {', '.join(failed)}")


class _Job:
    """The settings shared by every file of one run, and how one file is protected."""

    def __init__(self, options: dict, encoding, limit: int | None, overwrite: bool, announce_cpu: bool):
        self.options, self.encoding, self.limit, self.overwrite = options, encoding, limit, overwrite
        self.announce_cpu = announce_cpu
        self.pool = None
        self.stop: threading.Event | None = None

    def protect_file(self, source: Path, output: Path, report: Path | None, overwrite: bool | None = None,
                     label: str = "protect") -> None:
        from ..media.probe import probe
        from ..media.writer import container_for, write_text_atomically

        container = container_for(output)
        info = probe(source)
        check_outputs([source], {"-o/--output": output, "--report": report},
                      self.overwrite if overwrite is None else overwrite)
        stats, timing = _run(info, output, container, self, label)
        self.announce_cpu = False  # once per run
        summary = summarise(stats, PRESETS[self.options["preset"]].waits)
        click.echo(_summary_line(summary), err=True)
        if summary["frames_with_face"] == 0:
            click.echo("warning: no face found in any frame; the frames were passed through unchanged", err=True)
        elif summary["required_disrupted_fraction"] < 0.5:
            click.echo(f"warning: the engine's check found the protection incomplete on most face frames "
                       f"({', '.join(summary['required_targets'])} not all disrupted); a stronger preset or more "
                       "--max-steps protects more", err=True)
        if report is not None:
            frames = [{"frame": s.index, "face": s.face, "disrupted": s.disrupted, "steps": s.steps,
                       "inherited": s.inherited, "success": s.success, "measures": s.measures, "seconds": s.seconds,
                       "change_scale": s.change_scale, "floor_steps": s.floor_steps, "opening": s.opening,
                       "between": s.between, "hiding": s.hiding}
                      for s in stats]
            document = {"input": str(source), "output": str(output), "complete": True, "options": self.options,
                        "encoding": vars(self.encoding), "frames_limit": self.limit, "summary": summary,
                        "timing": timing, "frames": frames}
            write_text_atomically(report, json.dumps(document, indent=1))
        click.echo(f"protected video: {output}")


def _summary_line(summary: dict) -> str:
    """What the engine's own check found, e.g. 'facemesh disrupted on 46/48 face frames, headpose on 48/48'."""
    faces, counts = summary["frames_with_face"], summary["disrupted_count"]
    parts = [f"{name} on {count}/{faces}" for name, count in counts.items()]
    found = f"disrupted {', '.join(parts)} face frames" if parts else "nothing to disrupt"
    line = f"engine check: {found}; {_frames(summary['frames'] - faces)} without a face"
    if summary["opening_frame"] is not None:
        line += (f"; the opening frame waited for {summary['opening_frame']['detector']} to lose the face: "
                 f"{'lost' if summary['opening_frame']['face_lost'] else 'still found'}")
    if summary["hiding_frames"]:
        line += f"; {_frames(summary['hiding_frames'])} waited for it to miss the face as they are (face-hiding runs)"
    if summary["optimised_again_for_psnr_floor"]:
        again = summary["optimised_again_for_psnr_floor"]
        line += (f"; {_frames(again)} {'was' if again == 1 else 'were'} optimised again within what the "
                 "delivery encode left of the preset's PSNR floor")
    if summary["scaled_for_psnr_floor"]:
        line += (f"; the change was scaled down on {_frames(summary['scaled_for_psnr_floor'])} to keep the preset's "
                 f"PSNR floor (least scale {summary['least_change_scale']:.2f})")
    return line


def _frames(count: int) -> str:
    return f"{count} frame" if count == 1 else f"{count} frames"


def _run(info, output: Path, container: str, job: _Job, label: str) -> tuple[list, dict]:
    """Decode, protect and encode; returns the engine's record of every frame (``FrameStats``) and where the
    time went (seconds)."""
    import vapoursynth as vs
    from tqdm import tqdm

    from ..media.source import open_clip
    from ..media.writer import VideoWriter, atomic_output, plan_output
    from ..node import engines, protect, stats_from_props, window_bytes

    clip = open_clip(info)
    chunk = job.options["chunk"]
    # Windows held at once: one per engine thread here or per worker, plus the one being encoded.
    window = window_bytes(clip, chunk)
    windows = (engines(job.options["device"], job.options["threads"], window)[0] if job.pool is None
               else job.pool.size) + 1
    # Bounded memory whatever the length: room for those windows of float RGB frames, not the core's 4 GB default.
    vs.core.max_cache_size = int(64 + (windows + 1) * window / 2 ** 20)
    if clip.num_frames != info.frame_count:
        raise click.ClickException(f"{info.path}: {clip.num_frames} frames decoded but {info.frame_count} shown by "
                                   "the stream; the input looks damaged")
    audio_end = None
    limit = job.limit
    if limit is not None and limit < clip.num_frames:
        clip = clip[:limit]  # before protecting, so no chunk reaches past the frames written
        audio_end = _end_of_frame(info, limit - 1)
        info.timestamps = info.timestamps[:limit]
    picture = plan_output(info, clip.width, clip.height, clip.get_frame(0).props, clip.format.color_family == vs.RGB,
                          job.encoding)
    for notice in picture.notices:
        click.echo(f"note: {notice}", err=True)
    # The bar moves as the engine finishes each frame when it runs here; with workers, as frames arrive.
    bar = tqdm(total=clip.num_frames, unit="frame", file=sys.stderr, desc=label, dynamic_ncols=True)
    engine_progress = bar.update if job.pool is None else None
    try:
        protected = protect(clip, **job.options, interrupt=job.stop, workers=job.pool, cache_chunks=windows + 2,
                            progress=engine_progress)
    except vs.Error as exc:
        bar.close()
        raise click.ClickException(str(exc)) from exc
    encoded = _to_picture(protected, picture)
    stats = []
    per_worker: dict[str, float] = {}  # host:pid -> seconds of protection computed there
    started = time.perf_counter()
    waiting = encoding_time = protecting = 0.0
    with atomic_output(output) as temporary:
        writer = VideoWriter(temporary, container, info, job.encoding, picture, audio_end,
                             warn=lambda message: click.echo(f"warning: {message}", err=True))
        try:
            with bar:
                asked = time.perf_counter()
                for planes, props in _frames_in_background(encoded, job.stop):
                    got = time.perf_counter()
                    waiting += got - asked
                    writer.write(planes)
                    asked = time.perf_counter()
                    encoding_time += asked - got
                    protecting += float(props["VdfSeconds"])
                    per_worker[props["VdfWorker"]] = per_worker.get(props["VdfWorker"], 0.0) + props["VdfSeconds"]
                    if job.announce_cpu and not stats:
                        per_frame = props["VdfSeconds"] / (windows - 1)  # windows are protected side by side
                        bar.write(f"no CUDA GPU found: running on the CPU, about {per_frame:.1f} s per "
                                  f"frame at {clip.width}x{clip.height} (measured on the first chunk)", file=sys.stderr)
                    stats.append(stats_from_props(len(stats), props))
                    if engine_progress is None:
                        bar.update()
            closing = time.perf_counter()
            writer.close()
            encoding_time += time.perf_counter() - closing
        except vs.Error as exc:
            writer.abort()
            raise click.ClickException(_filter_message(exc)) from exc
        except OSError as exc:  # disk full, the folder gone, ...: one line, and the partial file removed
            writer.abort()
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
        except BaseException:
            writer.abort()
            raise
    seconds = time.perf_counter() - started
    click.echo(f"{len(stats)} frames in {seconds:.1f} s ({len(stats) / seconds:.2f} fps)", err=True)
    timing = {"total": seconds, "fps": len(stats) / seconds, "protect": protecting,
              "decode_and_convert": max(waiting - protecting, 0.0), "encode": encoding_time, "workers": per_worker}
    return stats, timing


def _filter_message(error) -> str:
    """The filter's own line of a VapourSynth error (VapourSynth appends the Python traceback of the callback)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    ours = [line[line.index("vdf.protect:"):] for line in lines if "vdf.protect:" in line]
    return ours[-1] if ours else (lines[-1] if lines else error.__class__.__name__)


def _end_of_frame(info, index: int):
    """When frame ``index`` stops being shown, in seconds: the next frame's start, or one average frame later."""
    if index + 1 < info.frame_count:
        return info.timestamps[index + 1] * info.time_base
    return info.timestamps[index] * info.time_base + 1 / info.average_rate


def _to_picture(protected, picture):
    """The protected clip in the output's pixel format, matrix and range."""
    import vapoursynth as vs

    from ..media.colour import matrix_name, range_name

    subsampling = 0 if picture.chroma_444 else 1
    target = vs.core.query_video_format(vs.YUV, vs.INTEGER, picture.bit_depth, subsampling, subsampling)
    conversion = {"matrix_s": matrix_name(picture.matrix), "range_s": range_name(picture.full_range)}
    if protected.format.color_family == vs.YUV:  # read with the same matrix, also when the frames leave it unspecified
        conversion |= {"matrix_in_s": conversion["matrix_s"], "range_in_s": conversion["range_s"]}
    return protected.resize.Bicubic(format=target.id, **conversion)


def _frames_in_background(clip, stop: threading.Event):
    """(planes, props) of each frame in order, rendered by a helper thread so that the main thread stays free to
    handle signals at once; at most FRAMES_IN_FLIGHT finished frames wait for the encoder. ``stop`` (the run's
    stop signal) ends the helper too."""
    from ..media.frames import planes

    ready: queue.Queue = queue.Queue(FRAMES_IN_FLIGHT)
    done = object()
    leaving = threading.Event()  # this file's loop has ended, however

    def put(item) -> None:
        while not (stop.is_set() or leaving.is_set()):
            try:
                ready.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def render() -> None:
        try:
            for frame in clip.frames(close=True):
                put((planes(frame), dict(frame.props)))
                if stop.is_set() or leaving.is_set():
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            put(exc)

    worker = threading.Thread(target=render, name="vdf-frames", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        leaving.set()
        worker.join(timeout=2)  # on a stop it may still wait on a window; it is a daemon and ends with it
