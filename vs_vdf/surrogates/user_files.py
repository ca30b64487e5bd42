"""The attackers' own model files, brought by the user: recognised, checked, added to the cache, loaded.

The ER-NeRF family acquires its 3D information with S3FD, 2D-FAN-4 (both from ``face-alignment``) and
the BiSeNet face parser. Their weights cannot be fetched from a package registry, but users can
download them from the projects' release pages. ``add`` accepts such a file only when it is what it
claims to be: a name carrying a sha256 prefix (the torch hub convention of ``face-alignment``'s files)
must match the content; the tensors must match the architecture key for key and shape for shape; a
pickle is read with ``weights_only=True``, so a file that would run code is refused; a TorchScript
archive (code, not just weights) is refused unless the caller opts in, and is then converted once to
plain weights. Only then is the file copied into the cache, atomically, with a record of its sha256.
Nothing added is ever fetched or committed: the cache lives outside the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..assets.cache import cache_root, sha256_of
from ..errors import VdfError


class CheckpointError(VdfError, ValueError):
    """A user-supplied model file is missing, unreadable, altered or of another architecture."""


def _s3fd() -> nn.Module:
    from .s3fd import S3FDNet
    return S3FDNet()


def _fan2d() -> nn.Module:
    from .fan import FANNet
    return FANNet()


def _bisenet() -> nn.Module:
    from .bisenet import BiSeNet
    return BiSeNet()


@dataclass(frozen=True)
class FileKind:
    name: str
    what: str
    release_files: dict[str, str]  # file name of each public release -> its sha256 prefix
    where: str  # where a user gets it
    architecture: Callable[[], nn.Module]


KINDS = {kind.name: kind for kind in (
    FileKind("s3fd", "S3FD face detector (face-alignment)", {"s3fd-619a316812.pth": "619a316812"},
             "face-alignment's release page, the file it downloads on first use (s3fd-619a316812.pth)", _s3fd),
    FileKind("fan2d", "2D-FAN-4 68-point landmarks (face-alignment)",
             {"2DFAN4-11f355bf06.pth.tar": "11f355bf06", "2DFAN4-cd938726ad.zip": "cd938726ad"},
             "face-alignment's release page (2DFAN4-11f355bf06.pth.tar; releases before 1.4 used the TorchScript "
             "2DFAN4-cd938726ad.zip)", _fan2d),
    FileKind("bisenet", "BiSeNet face parser, 19 classes (face-parsing.PyTorch)", {},
             "the face-parsing.PyTorch project, the checkpoint the ER-NeRF family ships as 79999_iter.pth", _bisenet),
)}
HASHED_NAME = re.compile(r"^(?P<stem>[A-Za-z0-9]+)-(?P<prefix>[0-9a-f]{8,64})\.(?:pth\.tar|pth|zip|pt)$")
NAME_HINTS = {"s3fd": "s3fd", "2dfan4": "fan2d", "79999_iter": "bisenet"}


def root() -> Path:
    """Where added files live: ``$VS_VDF_USER_MODELS``, else ``user-models`` in the cache."""
    explicit = os.environ.get("VS_VDF_USER_MODELS")
    return Path(explicit).expanduser() if explicit else cache_root() / "user-models"


@dataclass(frozen=True)
class Record:
    kind: str
    source_name: str  # the file name the user added
    source_sha256: str
    sha256: str  # of the stored plain-weights file
    size: int
    release: str | None  # the public release file whose hash prefix it matches, if any
    converted_from_torchscript: bool
    added: str


def _kind_of(path: Path, kind: str | None) -> str | None:
    if kind is not None:
        if kind not in KINDS:
            raise CheckpointError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
        return kind
    lowered = path.name.lower()
    return next((k for hint, k in NAME_HINTS.items() if lowered.startswith(hint)), None)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding code; a plain ``torch.save`` zip holds only data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def _read_state(path: Path, allow_torchscript: bool) -> dict:
    if _is_torchscript(path):
        if not allow_torchscript:
            raise CheckpointError(f"{path} is a TorchScript archive, which carries code as well as weights; it was "
                                  "refused. If it is the file face-alignment published (2DFAN4-cd938726ad.zip), "
                                  "add it again with --allow-torchscript: it is loaded once and kept as plain weights")
        try:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except Exception as exc:
            raise CheckpointError(f"{path} is not a loadable TorchScript archive ({exc.__class__.__name__})") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals: all mean "not plain weights"
        # PyTorch's own message suggests weights_only=False, which would run the file's code: not advice
        # to pass on for a file of unknown origin.
        raise CheckpointError(f"{path} is not a plain-weights PyTorch checkpoint ({exc.__class__.__name__}); it was "
                              "refused without running anything in it") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {str(key).removeprefix("module."): value for key, value in state.items()}


def _mismatch(state: dict, kind: str) -> str:
    """What keeps ``state`` from loading strictly into the architecture ('' when nothing)."""
    expected = KINDS[kind].architecture().state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}  # absent from older PyTorch files
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state)
                   if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape)
    return "; ".join(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys)


def checked_state(path: Path | str, kind: str | None = None, *, allow_torchscript: bool = False) -> tuple[str, dict]:
    """The file's kind and its state dict, after every check (name's hash prefix, safe loading, strict
    structure); raises ``CheckpointError`` naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    kind = _kind_of(path, kind)
    hashed = HASHED_NAME.match(path.name)
    if hashed:
        actual = sha256_of(path)
        if not actual.startswith(hashed["prefix"]):
            raise CheckpointError(f"{path.name}: its sha256 starts {actual[:len(hashed['prefix'])]}, not "
                                  f"{hashed['prefix']} as its name says; the file is truncated, altered or renamed")
    state = _read_state(path, allow_torchscript)
    if kind is None:
        kind = next((k for k in KINDS if not _mismatch(state, k)), None)
        if kind is None:
            raise CheckpointError(f"{path} matches none of {', '.join(KINDS)}; pass --as KIND if it is one of them")
        return kind, state
    problem = _mismatch(state, kind)
    if problem:
        raise CheckpointError(f"{path} is not a {KINDS[kind].what} checkpoint ({problem})")
    return kind, state


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".partial-", suffix=target.suffix, delete=False)
    handle.close()
    try:
        write(Path(handle.name))
        with open(handle.name, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def stored_path(kind: str) -> Path:
    return root() / f"{kind}.pth"


def _record_path(kind: str) -> Path:
    return root() / f"{kind}.json"


def add(path: Path | str, kind: str | None = None, *, allow_torchscript: bool = False) -> Record:
    """Check ``path`` and copy it into the cache as the user's ``kind`` model (replacing an earlier one)."""
    path = Path(path)
    source_sha = sha256_of(path)
    kind, state = checked_state(path, kind, allow_torchscript=allow_torchscript)
    converted = _is_torchscript(path)
    target = stored_path(kind)

    def copy(temp: Path) -> None:
        temp.write_bytes(path.read_bytes())
        if sha256_of(temp) != source_sha:  # the file changed while it was being checked
            raise CheckpointError(f"{path} changed while it was being added; nothing was added")

    _write_atomically(target, (lambda temp: torch.save(state, temp)) if converted else copy)
    release = next((name for name, prefix in KINDS[kind].release_files.items() if source_sha.startswith(prefix)), None)
    record = Record(kind, path.name, source_sha, sha256_of(target), target.stat().st_size, release, converted,
                    datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _write_atomically(_record_path(kind), lambda temp: temp.write_text(json.dumps(asdict(record), indent=1)))
    return record


def record(kind: str) -> Record | None:
    try:
        return Record(**json.loads(_record_path(kind).read_text()))
    except (FileNotFoundError, TypeError, ValueError):
        return None


def state_of(kind: str) -> str:
    """'ok', 'absent', or 'corrupt' (the stored file no longer matches its record)."""
    entry = record(kind)
    target = stored_path(kind)
    if entry is None or not target.is_file():
        return "absent"
    return "ok" if sha256_of(target) == entry.sha256 else "corrupt"


def present() -> tuple[str, ...]:
    """The kinds added and intact."""
    return tuple(kind for kind in KINDS if state_of(kind) == "ok")


def load_state(kind: str) -> dict:
    """The verified state dict of the user's ``kind`` model, or an error saying how to add one."""
    state = state_of(kind)
    if state != "ok":
        hint = KINDS[kind]
        raise CheckpointError(f"{kind} ({hint.what}) needs the user's own weights, which cannot be fetched here "
                              f"({state} in {root()}): get them from {hint.where}, then run `vdf models add FILE`")
    return checked_state(stored_path(kind), kind)[1]
