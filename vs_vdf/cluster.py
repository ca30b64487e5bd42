"""Windows computed by long-lived Ray workers: a local Ray instance started for the run, or an existing
cluster. Each worker loads the models once and protects whole windows; the frames travel through Ray's
object store, so workers on other machines never need the input file.

Output is byte-identical to a single process with the same options, seed and torch threads per chunk
(``--threads``): torch's CPU kernels give slightly different floats with a different thread count, so
workers run with a fixed count (one by default) rather than whatever their machine has.
A worker that dies mid-window (killed, out of memory) is restarted by Ray and the window is retried on it.
"""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np

from .errors import VdfError

RETRIES = 3  # restarts of a dead worker, and retries of the window it was computing


class ClusterError(VdfError):
    """Ray is missing, cannot be reached, or a window failed on every retry."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--workers and --ray-address need Ray: pip install 'vs-vdf[cluster]' "
                           "(or pip install ray)") from None
    return ray


def _reason(error: Exception) -> str:
    """The message of the vs-vdf error behind a Ray failure if there is one, else Ray's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    ours = [line.split("Error: ", 1)[1] for line in lines if line.startswith("vs_vdf.") and "Error: " in line]
    return ours[-1] if ours else (lines[0] if lines else error.__class__.__name__)


class _Worker:
    """One Ray actor: a Protector made once, then window after window."""

    def __init__(self, options: dict):
        from .engine import Protector
        from .engine.targets import parse

        self.seed, self.similarity = options.pop("seed"), options.pop("similarity")
        options["targets"] = parse(options.get("targets"))
        self.protector = Protector(options.pop("preset"), seed=self.seed, **options)

    def protect(self, first_frame: int, source: np.ndarray):
        from .engine.chunks import run_window

        return run_window(self.protector, source, first_frame, self.seed, self.similarity)


class WorkerPool:
    """``submit(first_frame, source)`` for the node, spread over ``workers`` Ray actors in turn (thread-safe)."""

    def __init__(self, workers: int, options: dict, *, address: str | None = None, threads: int = 1):
        if workers < 1:
            raise ClusterError(f"--workers must be at least 1, got {workers}")
        os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")  # no thread may quietly start a second Ray
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")  # a window given up on is not reported again
        ray = _ray()
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                ray.init(address=address or "local", num_cpus=None if address else workers * threads,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ClusterError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from exc
        gpus = 1 if str(options.get("device", "cpu")).startswith("cuda") else 0
        actor = ray.remote(num_cpus=threads, num_gpus=gpus, max_restarts=RETRIES, max_task_retries=RETRIES)(_Worker)
        self.workers = [actor.remote(dict(options, threads=threads)) for _ in range(workers)]
        self.size = workers
        self.turn = itertools.count()  # windows go to the workers in turn; each queues its own
        self.state = threading.Condition()
        self.closed, self.active = False, 0  # under ``state``: no new window after close; windows awaited
        self.pending: set = set()  # under ``state``: the windows' object references, cancelled on close

    def submit(self, first_frame: int, source: np.ndarray):
        """Send a window to the next worker; returns a function that waits for its ``WindowResult``."""
        with self.state:
            if self.closed:
                raise ClusterError("the workers were stopped")
            worker = self.workers[next(self.turn) % self.size]
            pending = worker.protect.remote(first_frame, source)
            self.pending.add(pending)
        return lambda: self._wait(pending, first_frame)

    def _wait(self, pending, first_frame: int):
        with self.state:
            self.active += 1
        try:
            return self.ray.get(pending)
        except self.ray.exceptions.RayError as exc:
            if self.closed:
                raise ClusterError("the workers were stopped") from None
            raise ClusterError(f"the window at frame {first_frame} failed after {RETRIES} retries: "
                               f"{_reason(exc)}") from exc
        finally:
            with self.state:
                self.pending.discard(pending)
                self.active -= 1
                self.state.notify_all()

    def close(self) -> None:
        """Stop the workers, let the windows under way fail fast, then stop the local Ray instance this pool
        started (a thread still inside Ray while it shuts down would bring the process down)."""
        with self.state:
            self.closed = True
            for pending in self.pending:
                self.ray.cancel(pending)
        for worker in self.workers:
            self.ray.kill(worker, no_restart=True)
        with self.state:
            self.state.wait_for(lambda: self.active == 0, timeout=30)
        if self.started_here:
            self.ray.shutdown()
