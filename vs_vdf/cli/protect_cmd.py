"""`vdf protect INPUT -o OUTPUT`: decode (bestsource), protect (the node), encode (PyAV) with the audio."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from ..engine.objectives import TARGETS
from ..engine.presets import PRESETS
from ..engine.protector import METHODS
from ..media.writer import CODECS, Encoding


def _bitrate(value: str | None) -> int | None:
    if value is None:
        return None
    units = {"k": 1_000, "m": 1_000_000}
    text = value.strip().lower()
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{value!r} is not a bitrate like 2M or 800k", param_hint="--bitrate") from None


def _check_paths(source: Path, output: Path, overwrite: bool) -> None:
    if output.exists() and output.is_dir():
        raise click.ClickException(f"{output} is a folder; give a file name for the output")
    same = output.resolve() == source.resolve() or (output.exists() and os.path.samefile(output, source))
    if same:
        raise click.ClickException(f"{output} is the input file; vdf never writes over its input")
    if output.exists() and not overwrite:
        raise click.ClickException(f"{output} exists; pass --overwrite to replace it")
    folder = output.parent
    if not folder.is_dir():
        raise click.ClickException(f"cannot write {output}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise click.ClickException(f"cannot write {output}: no write permission in {folder}")


@click.command("protect")
@click.argument("source", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The protected video to write.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="balanced", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--method", type=click.Choice(METHODS), default="vdf", show_default=True)
@click.option("--targets", help=f"Comma-separated models to attack (default: all but the transfer checks). "
                                f"Known: {', '.join(TARGETS)}.")
@click.option("--epsilon", type=float, help="L-infinity bound in [0, 1] units (default: the preset's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--chunk", type=int, default=24, show_default=True, help="Lookahead window in frames.")
@click.option("--max-steps", type=int, help="Optimisation steps per frame at most (default: the preset's).")
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A BiSeNet face-parsing checkpoint (79999_iter.pth) to attack as well.")
@click.option("--codec", type=click.Choice(CODECS), default="libx264", show_default=True)
@click.option("--crf", type=float, default=18, show_default=True, help="Constant rate factor of the lossy encode.")
@click.option("--bitrate", help="Target bitrate instead of a CRF, e.g. 2M.")
@click.option("--lossless", is_flag=True, help="Lossless 4:4:4 output instead of the lossy default.")
@click.option("--frames", "limit", type=click.IntRange(min=1), help="Only the first N frames (and the audio under them).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--report", type=click.Path(path_type=Path), help="Write per-frame statistics and the options as JSON.")
def protect_command(source: Path, output: Path, preset: str, device: str, method: str, targets: str | None,
                    epsilon: float | None, seed: int, chunk: int, max_steps: int | None, checkpoint: Path | None, codec: str, crf: float,
                    bitrate: str | None, lossless: bool, limit: int | None, overwrite: bool, report: Path | None) -> None:
    """Protect the faces in INPUT and write OUTPUT (H.264 yuv420p CRF 18 unless told otherwise)."""
    from ..engine.protector import resolve_device
    from ..media.probe import MediaError, probe

    encoding = Encoding(codec, crf, _bitrate(bitrate), lossless)
    try:
        resolve_device(device)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        info = probe(source)
    except MediaError as exc:
        raise click.ClickException(str(exc)) from exc
    _check_paths(source, output, overwrite)
    options = {"preset": preset, "device": device, "method": method, "targets": targets, "epsilon": epsilon,
               "seed": seed, "chunk": chunk, "max_steps": max_steps, "checkpoint": str(checkpoint) if checkpoint else None}
    frames, timing = _run(info, output, options, encoding, limit)
    faces = sum(f["face"] for f in frames)
    if faces == 0:
        click.echo("warning: no face found in any frame; the frames were passed through unchanged", err=True)
    if report is not None:
        targets = sorted({t for f in frames for t in f["success"]})
        summary = {"frames": len(frames), "frames_with_face": faces,
                   "steps_per_face_frame": sum(f["steps"] for f in frames) / max(faces, 1),
                   "all_targets_disrupted_fraction": sum(f["disrupted"] for f in frames) / max(faces, 1),
                   "disrupted_fraction": {t: sum(f["success"].get(t, False) for f in frames) / max(faces, 1)
                                          for t in targets}}
        document = {"input": str(source), "output": str(output), "options": options,
                    "encoding": vars(encoding), "summary": summary, "timing": timing, "frames": frames}
        report.write_text(json.dumps(document, indent=1))
    click.echo(f"protected video: {output}")


def _run(info, output: Path, options: dict, encoding: Encoding, limit: int | None) -> tuple[list[dict], dict]:
    """Decode, protect and encode; returns the per-frame records and where the time went (seconds)."""
    import numpy as np
    import vapoursynth as vs
    from tqdm import tqdm

    from ..media.probe import MediaError
    from ..media.source import open_clip
    from ..media.writer import VideoWriter, atomic_output
    from ..node import MATRIX_NAMES, default_matrix, protect

    try:
        clip = open_clip(info)
    except MediaError as exc:
        raise click.ClickException(str(exc)) from exc
    # Bounded memory whatever the length: room for one chunk of float RGB frames, not the core's 4 GB default.
    frame_mb = clip.width * clip.height * 3 * 4 / 2 ** 20
    vs.core.max_cache_size = int(64 + options["chunk"] * frame_mb)
    if clip.num_frames != info.frame_count:
        raise click.ClickException(f"{info.path}: {clip.num_frames} frames decoded but {info.frame_count} in the "
                                   "stream; the input looks damaged")
    if limit is not None and limit < clip.num_frames:
        clip = clip[:limit]  # before protecting, so no chunk reaches past the frames written
        info.timestamps = info.timestamps[:limit]
    try:
        protected = protect(clip, **options)
    except vs.Error as exc:
        raise click.ClickException(str(exc)) from exc
    matrix = MATRIX_NAMES.get(info.color["colorspace"], default_matrix(clip.width, clip.height))
    target = vs.YUV444P8 if encoding.lossless else vs.YUV420P8
    if protected.format.id == target:
        encoded = protected
    else:  # the input's own matrix, also when its frames leave it unspecified
        source_matrix = {"matrix_in_s": matrix} if protected.format.color_family == vs.YUV else {}
        encoded = protected.resize.Bicubic(format=target, matrix_s=matrix, **source_matrix)
    frames: list[dict] = []
    started = time.perf_counter()
    waiting = encoding_time = protecting = 0.0
    with atomic_output(output) as temporary:
        writer = VideoWriter(temporary, info, encoding)
        try:
            with tqdm(total=encoded.num_frames, unit="frame", file=sys.stderr, desc="protect", dynamic_ncols=True) as bar:
                asked = time.perf_counter()
                for frame in encoded.frames(close=True):
                    got = time.perf_counter()
                    waiting += got - asked
                    writer.write([np.asarray(frame[p]) for p in range(3)])
                    asked = time.perf_counter()
                    encoding_time += asked - got
                    props = frame.props
                    protecting += float(props["VdfSeconds"])
                    frames.append({"frame": len(frames), "face": bool(props["VdfFace"]),
                                   "disrupted": bool(props["VdfSuccess"]), **json.loads(props["VdfStats"])})
                    bar.update()
        except vs.Error as exc:
            writer.abort()
            raise click.ClickException(str(exc)) from exc
        except BaseException:
            writer.abort()
            raise
        closing = time.perf_counter()
        writer.close()
        encoding_time += time.perf_counter() - closing
    seconds = time.perf_counter() - started
    click.echo(f"{len(frames)} frames in {seconds:.1f} s ({len(frames) / seconds:.2f} fps)", err=True)
    timing = {"total": seconds, "fps": len(frames) / seconds, "protect": protecting,
              "decode_and_convert": max(waiting - protecting, 0.0), "encode": encoding_time}
    return frames, timing

