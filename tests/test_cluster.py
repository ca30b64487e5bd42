"""`vdf protect --workers N` on a local Ray instance: identical bytes, a killed worker, folders that resume,
Ctrl-C, and the message without Ray. Each run starts and stops its own Ray instance (a few seconds)."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vs_vdf.cli import main

pytest.importorskip("ray")

FAST = ["--preset", "light", "--targets", "facemesh,headpose", "--chunk", "3", "--device", "cpu"]
VDF = str(Path(sys.executable).parent / "vdf")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vdf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VDF, "protect", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def single(clips, tmp_path_factory) -> Path:
    """The single-process reference: one torch thread, as each worker runs."""
    output = tmp_path_factory.mktemp("single") / "out.mp4"
    result = vdf(str(clips["franck"]), "-o", str(output), *FAST, "--max-steps", "8", "--threads", "1")
    assert result.returncode == 0, result.stderr
    return output


def test_two_workers_give_the_bytes_of_one_process(single, clips, tmp_path):
    output = tmp_path / "out.mp4"
    result = vdf(str(clips["franck"]), "-o", str(output), *FAST, "--max-steps", "8", "--workers", "2",
                 "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert digest(output) == digest(single)
    import json

    timing = json.loads((tmp_path / "r.json").read_text())["timing"]
    assert len(timing["workers"]) == 2  # the split per worker: both took windows


def test_a_worker_killed_mid_window_is_replaced_and_the_bytes_stay_the_same(single, clips, tmp_path):
    output = tmp_path / "out.mp4"
    process = subprocess.Popen([VDF, "protect", str(clips["franck"]), "-o", str(output), *FAST, "--max-steps", "8",
                                "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, victim = time.monotonic() + 180, None
    while victim is None and time.monotonic() < deadline and process.poll() is None:
        busy = subprocess.run(["pgrep", "-f", "ray::_Worker.protect"], capture_output=True, text=True).stdout.split()
        victim = int(busy[0]) if busy else None
        time.sleep(0.05)
    assert victim is not None, "no worker was seen computing a window"
    subprocess.run(["kill", "-9", str(victim)], check=True)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert digest(output) == digest(single)


def test_a_folder_is_protected_once_and_a_second_run_skips_what_is_done(clips, tmp_path):
    folder, out = tmp_path / "videos", tmp_path / "protected"
    folder.mkdir()
    for name in ("franck", "wolfgang", "no_face"):
        shutil.copy(clips[name], folder / f"{name}.mp4")
    (folder / "notes.txt").write_text("not a video")
    first = vdf(str(folder), "-o", str(out), *FAST, "--max-steps", "1", "--workers", "2")
    assert first.returncode == 0, first.stderr
    assert "3 videos: 3 protected, 0 skipped" in first.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["franck.mp4", "franck.mp4.json", "no_face.mp4", "no_face.mp4.json", "wolfgang.mp4",
                     "wolfgang.mp4.json"]
    before = {name: digest(out / name) for name in names}
    (out / "wolfgang.mp4.json").unlink()  # as if the run had stopped before this report was written
    second = vdf(str(folder), "-o", str(out), *FAST, "--max-steps", "1", "--workers", "2")
    assert second.returncode == 0, second.stderr
    assert "3 videos: 1 protected, 2 skipped" in second.stderr
    assert digest(out / "franck.mp4") == before["franck.mp4"] and digest(out / "wolfgang.mp4") == before["wolfgang.mp4"]


def test_ctrl_c_stops_the_workers_and_leaves_nothing(clips, tmp_path):
    output = tmp_path / "out.mp4"
    process = subprocess.Popen([VDF, "protect", str(clips["franck"]), "-o", str(output), *FAST, "--max-steps", "5000",
                                "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if subprocess.run(["pgrep", "-f", "ray::_Worker.protect"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert list(tmp_path.iterdir()) == []
    time.sleep(1)
    assert subprocess.run(["pgrep", "-f", "ray::_Worker"], capture_output=True).returncode != 0  # workers gone


def test_a_window_that_fails_every_retry_fails_the_run_and_leaves_nothing(clips, tmp_path):
    broken = tmp_path / "not-a-checkpoint.pth"
    broken.write_text("not weights")  # the workers cannot even start with it
    out = tmp_path / "out"
    out.mkdir()
    result = vdf(str(clips["franck"]), "-o", str(out / "o.mp4"), *FAST, "--max-steps", "1", "--workers", "1",
                 "--targets", "facemesh,bisenet", "--checkpoint", str(broken))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]  # Ray prints the workers' tracebacks above it
    assert "failed after 3 retries" in last and "not a plain-weights PyTorch checkpoint" in last
    assert list(out.iterdir()) == []


def test_without_ray_the_option_says_how_to_install_it(clips, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if it were not installed
    result = CliRunner().invoke(main, ["protect", str(clips["franck"]), "-o", str(tmp_path / "o.mp4"), *FAST,
                                       "--workers", "2"])
    assert result.exit_code == 1
    assert "pip install 'vs-vdf[cluster]'" in result.output
