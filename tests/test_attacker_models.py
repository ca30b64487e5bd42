"""The attackers' own models (S3FD, 2D-FAN-4, BiSeNet) from the user's files.

Their real weights cannot be fetched here, so the tests build synthetic checkpoints with the exact
state-dict layouts of the real files and check: adding and refusing files; parity with the
``face-alignment`` package's own inference code and with the attackers' face-parsing procedure on
real frames; gradients to the pixels; and `vdf protect` / the ER-NeRF replica end to end.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from vs_vdf import samples, surrogates
from vs_vdf.surrogates import user_files
from vs_vdf.surrogates.bisenet import IMAGENET_MEAN, IMAGENET_STD, BiSeNet
from vs_vdf.surrogates.fan import FANNet
from vs_vdf.surrogates.s3fd import BGR_MEAN, HEADS, NORMS, S3FDNet


def _random_state(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights of the real file's layout: He-scaled convolutions, plausible batch-norm statistics."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if not value.is_floating_point():
            state[key] = value
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif value.dim() > 1:
            state[key] = torch.randn(value.shape, generator=generator) * (2 / value[0].numel()) ** 0.5
        else:
            centre = 1.0 if key.endswith(".weight") else 0.0
            state[key] = torch.randn(value.shape, generator=generator) * 0.1 + centre
    return state


def _scaled_outputs(net: torch.nn.Module, state: dict, inputs: torch.Tensor, spreads: dict[str, float]) -> dict:
    """``state`` with the named output layers rescaled so that, on ``inputs``, each output's standard
    deviation is the given spread: random weights otherwise saturate every score and heatmap."""
    net.load_state_dict(state)
    net.eval()
    outputs = {}
    for name in spreads:
        getattr(net, name).register_forward_hook(lambda module, i, out, name=name: outputs.__setitem__(name, out))
    with torch.no_grad():
        net(inputs)
    for name, spread in spreads.items():
        factor = spread / float(outputs[name].std())
        state[f"{name}.weight"] *= factor
        state[f"{name}.bias"] *= factor
    return state


def _s3fd_state(frame: torch.Tensor) -> dict[str, torch.Tensor]:
    """S3FD weights whose scores spread around 0.5 and whose boxes stay near their anchors."""
    state = _random_state(S3FDNet(), 1)
    for name, (_, scale) in NORMS.items():
        state[f"{name}.weight"].fill_(scale)
    spreads = {f"{source}_mbox_{part}": 1.0 if part == "conf" else 0.3 for source, _, _ in HEADS
               for part in ("conf", "loc")}
    return _scaled_outputs(S3FDNet(), state, frame[None].flip(1) * 255 - torch.tensor(BGR_MEAN).view(1, 3, 1, 1),
                           spreads)


def _fan_state(frame: torch.Tensor) -> dict[str, torch.Tensor]:
    """FAN weights whose last heatmaps have the spread of a trained network's (peaks near 1)."""
    crop = torch.nn.functional.interpolate(frame[None], size=(256, 256), mode="bilinear")
    return _scaled_outputs(FANNet(), _random_state(FANNet(), 2), crop, {"l3": 0.3})


def _first_frames(path: Path, count: int) -> torch.Tensor:
    with av.open(str(path)) as container:
        images = [f.to_ndarray(format="rgb24") for _, f in zip(range(count), container.decode(video=0))]
    return torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images]).float() / 255


def _image(frame: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((frame * 255).round().byte().permute(1, 2, 0).numpy())


def _save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def _hashed(path: Path, stem: str, suffix: str) -> Path:
    """``path`` renamed the way face-alignment names its files: STEM-<first 10 hex of sha256>SUFFIX."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return path.rename(path.with_name(f"{stem}-{digest}{suffix}"))


@pytest.fixture(scope="module")
def franck() -> torch.Tensor:
    return _first_frames(samples.path("franck"), 2)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, franck) -> dict[str, Path]:
    """Synthetic files named like the real ones (with their own hash prefixes)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "s3fd": _hashed(_save(_s3fd_state(franck[0]), folder / "s3fd.pth"), "s3fd", ".pth"),
        "fan2d": _hashed(_save(_fan_state(franck[0]), folder / "2DFAN4.pth.tar"), "2DFAN4", ".pth.tar"),
        "bisenet": _save(_random_state(BiSeNet(), 3), folder / "79999_iter.pth"),
    }


@pytest.fixture
def user_models(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "user-models"
    monkeypatch.setenv("VS_VDF_USER_MODELS", str(root))
    return root


@pytest.fixture
def added(user_models, checkpoints) -> Path:
    for kind, path in checkpoints.items():
        user_files.add(path)
    return user_models


# ------------------------------------------------------------------ adding files

def test_each_file_is_recognised_checked_and_copied(user_models, checkpoints):
    for kind, path in checkpoints.items():
        record = user_files.add(path)
        assert record.kind == kind and record.source_name == path.name and record.release is None
        assert record.sha256 == record.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert user_files.state_of(kind) == "ok"
        loaded = user_files.load_state(kind)
        original = torch.load(path, weights_only=True)
        assert loaded.keys() == original.keys() and all(torch.equal(loaded[k], original[k]) for k in loaded)
    assert set(user_files.present()) == {"s3fd", "fan2d", "bisenet"}
    assert not any(p.name.startswith(".partial") for p in user_models.iterdir())


def test_a_file_without_a_telling_name_is_recognised_by_its_structure(user_models, checkpoints, tmp_path):
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(checkpoints["fan2d"].read_bytes())
    assert user_files.add(renamed).kind == "fan2d"


def test_a_wrong_hash_prefix_is_refused_and_nothing_is_copied(user_models, checkpoints, tmp_path):
    claimed = tmp_path / "s3fd-619a316812.pth"  # the real release's prefix on other content
    claimed.write_bytes(checkpoints["s3fd"].read_bytes())
    with pytest.raises(user_files.CheckpointError, match="not 619a316812 as its name says"):
        user_files.add(claimed)
    assert not user_models.exists() or not any(user_models.iterdir())


def test_a_truncated_file_is_refused(user_models, checkpoints, tmp_path):
    data = checkpoints["s3fd"].read_bytes()
    same_name = tmp_path / checkpoints["s3fd"].name
    same_name.write_bytes(data[: len(data) // 2])
    with pytest.raises(user_files.CheckpointError, match="truncated, altered or renamed"):
        user_files.add(same_name)
    plain_name = tmp_path / "s3fd.pth"
    plain_name.write_bytes(data[: len(data) // 2])
    with pytest.raises(user_files.CheckpointError, match="not a plain-weights PyTorch checkpoint"):
        user_files.add(plain_name)
    assert user_files.present() == ()


def test_a_different_architecture_is_refused(user_models, checkpoints):
    with pytest.raises(user_files.CheckpointError, match="not a S3FD face detector.*missing: conv1_1"):
        user_files.add(checkpoints["fan2d"], "s3fd")
    shapes = {k: v[..., :1] if k == "conv1_1.weight" else v for k, v in torch.load(checkpoints["s3fd"]).items()}
    reshaped = _save(shapes, user_models.parent / "s3fd.pth")
    with pytest.raises(user_files.CheckpointError, match="wrong shape: conv1_1.weight"):
        user_files.add(reshaped)
    assert user_files.present() == ()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_a_pickle_that_runs_code_is_refused_without_running_it(user_models, tmp_path):
    _Payload.marker = tmp_path / "ran"
    hostile = _save({"conv1_1.weight": _Payload()}, tmp_path / "s3fd.pth")
    with pytest.raises(user_files.CheckpointError, match="refused without running anything"):
        user_files.add(hostile)
    assert not _Payload.marker.exists() and user_files.present() == ()


def test_torchscript_needs_the_flag_and_is_kept_as_plain_weights(user_models, checkpoints, tmp_path):
    net = FANNet()
    net.load_state_dict(torch.load(checkpoints["fan2d"]))
    archive = tmp_path / "2DFAN4.zip"
    torch.jit.trace(net.eval(), torch.rand(1, 3, 64, 64)).save(str(archive))
    archive = _hashed(archive, "2DFAN4", ".zip")
    with pytest.raises(user_files.CheckpointError, match="TorchScript archive.*--allow-torchscript"):
        user_files.add(archive)
    assert user_files.present() == ()
    record = user_files.add(archive, allow_torchscript=True)
    assert record.kind == "fan2d" and record.converted_from_torchscript and record.sha256 != record.source_sha256
    stored = torch.load(user_files.stored_path("fan2d"), weights_only=True)  # plain weights from now on
    assert torch.equal(stored["l3.weight"], net.state_dict()["l3.weight"])


def test_a_changed_stored_file_is_corrupt_and_not_loaded(added):
    path = user_files.stored_path("bisenet")
    path.write_bytes(path.read_bytes()[:-10])
    assert user_files.state_of("bisenet") == "corrupt" and "bisenet" not in user_files.present()
    with pytest.raises(user_files.CheckpointError, match="vdf models add"):
        surrogates.load("bisenet")


def test_cli_add_and_list(user_models, checkpoints):
    env = {**os.environ, "VS_VDF_USER_MODELS": str(user_models)}
    vdf = [sys.executable, "-m", "vs_vdf.cli"]
    added = subprocess.run([*vdf, "models", "add", str(checkpoints["s3fd"])], env=env, capture_output=True, text=True)
    assert added.returncode == 0 and "as s3fd" in added.stdout and "not match a known release" in added.stdout
    refused = subprocess.run([*vdf, "models", "add", str(checkpoints["s3fd"]), "--as", "bisenet"], env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "not a BiSeNet" in refused.stderr and "Traceback" not in refused.stderr
    listing = subprocess.run([*vdf, "models", "list"], env=env, capture_output=True, text=True, check=True).stdout
    rows = {line.split()[0]: line for line in listing.splitlines()[-3:]}
    assert "ok" in rows["s3fd"] and checkpoints["s3fd"].name in rows["s3fd"]
    assert "absent" in rows["fan2d"] and "2DFAN4-11f355bf06.pth.tar" in rows["fan2d"]


def test_added_models_join_the_default_ensemble(added):
    from vs_vdf.engine.targets import DEFAULT_TARGETS, default_targets
    assert default_targets() == DEFAULT_TARGETS + ("s3fd", "fan2d", "fan2d_pose", "bisenet")


# ------------------------------------------------------------------ parity with the attackers' code

def test_s3fd_and_fan_match_face_alignment_on_real_frames(added, checkpoints, franck):
    from face_alignment import api
    from face_alignment.detection.sfd.sfd_detector import SFDDetector
    from face_alignment.models.fan import FAN

    detector = SFDDetector("cpu", path_to_detector=str(checkpoints["s3fd"]))  # never its download path
    network = FAN(4)
    network.load_state_dict(torch.load(checkpoints["fan2d"], weights_only=True))
    aligner = api.FaceAlignment.__new__(api.FaceAlignment)  # its constructor downloads: set the parts directly
    aligner.__dict__.update(device="cpu", dtype=torch.float32, flip_input=False, max_batch_size=1, verbose=False,
                            landmarks_type=api.LandmarksType.TWO_D, face_detector=detector,
                            face_alignment_net=network.eval())
    s3fd, fan = surrogates.load("s3fd"), surrogates.load("fan2d")
    theirs = np.array(detector.detect_from_image(_image(franck[0]).copy()))
    ours = s3fd.detect(franck[:1])[0]
    assert len(ours) == len(theirs) > 3
    assert np.abs(ours.boxes.numpy() - theirs[:, :4]).max() < 1e-4
    assert np.abs(ours.scores.numpy() - theirs[:, 4]).max() < 1e-4
    assert abs(float(s3fd.scores(franck[:1])[0]) - theirs[0, 4]) < 1e-4
    faces = theirs[:3]  # the best face as ER-NeRF takes it, and two more crops elsewhere in the frame
    their_points = aligner.get_landmarks_from_image(_image(franck[0]).copy(), detected_faces=list(faces))
    our_points = fan.landmarks(franck[[0, 0, 0]], torch.from_numpy(faces[:, :4]), torch.arange(3))
    for mine, reference in zip(our_points, their_points):
        assert np.abs(mine.numpy() - reference).max() < 1e-4


@pytest.mark.parametrize("sample", ["franck", "wolfgang"])  # 360x288 is enlarged to 512, 640x360 also shrunk
def test_bisenet_labels_match_the_face_parsing_procedure(added, sample):
    frame = _first_frames(samples.path(sample), 1)
    parser = surrogates.load("bisenet")
    image = Image.fromarray(_image(frame[0])).resize((512, 512), Image.BILINEAR)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255
    normalised = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        parsing = parser.net(normalised)[0].argmax(0).numpy().astype(np.uint8)
    height, width = frame.shape[-2:]
    theirs = cv2.resize(parsing, (width, height), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(parser.labels(frame)[0].numpy(), theirs)
    assert len(np.unique(theirs)) > 1


def test_gradients_reach_the_pixels_through_all_three(added, franck):
    from vs_vdf.engine.objectives import Objectives

    objectives = Objectives(("s3fd", "fan2d", "fan2d_pose", "bisenet"))
    ref = objectives.reference(franck[:1])
    assert not ref.s3fd_boxes.isnan().any() and ref.landmarks["fan2d"].shape == (1, 68, 2)
    for name in objectives.targets:
        frames = franck[:1].clone().requires_grad_()
        loss = objectives.losses(frames, ref, (name,))[name]
        loss.sum().backward()
        assert frames.grad.isfinite().all() and frames.grad.abs().sum() > 0, name
    measures = objectives.measures(franck[:1], ref, objectives.targets)
    assert float(measures["fan2d"][0]) < 1e-6 and float(measures["fan2d_pose"][0]) < 1e-3  # clean vs itself
    assert float(measures["bisenet"][0]) == 1 and float(measures["s3fd"][0]) > 0.5


# ------------------------------------------------------------------ end to end

def test_protect_attacks_the_attackers_models_end_to_end(added, clips, tmp_path):
    out = tmp_path / "protected.mp4"
    env = {**os.environ, "VS_VDF_USER_MODELS": str(added)}
    run = subprocess.run([sys.executable, "-m", "vs_vdf.cli", "protect", str(clips["franck"]), "-o", str(out),
                          "--targets", "s3fd,fan2d,bisenet", "--frames", "1", "--max-steps", "1", "--device", "cpu",
                          "--report", str(tmp_path / "report.json")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.is_file() and "s3fd" in run.stderr and "fan2d" in run.stderr
    assert _first_frames(out, 1).shape == _first_frames(clips["franck"], 1).shape


def test_ernerf_replica_runs_the_attackers_models(added, franck):
    from vs_vdf.evaluation.analysis import Analyst
    from vs_vdf.evaluation.pipelines import ernerf_replica

    analyst = Analyst(models=("s3fd", "fan2d", "fan2d_pose", "bisenet"))
    noisy = (franck + 0.03 * torch.randn_like(franck)).clamp(0, 1)
    result = ernerf_replica(analyst, franck, noisy, 25)
    assert all(entry["present"] for entry in result["attacker_models"].values())
    assert result["frames_without_face"]["s3fd"] == [] and result["would_crash"] is False
    assert result["fan2d_on_own_detection"]["frames"] == 2
    assert 0 <= result["background_plate_head_leak"] <= 1
    assert set(result["models"]) == {"s3fd", "fan2d", "fan2d_pose", "bisenet"}


def test_the_report_says_what_stood_in_when_files_are_absent(user_models):
    from vs_vdf.evaluation.evaluate import attacker_models_text
    from vs_vdf.evaluation.pipelines import attacker_models

    text = attacker_models_text({"pipelines": {"ernerf": {"attacker_models": attacker_models()}}})
    assert "s3fd: absent, stood in for by blazeface_short + mtcnn" in text
    assert "bisenet: absent, stood in for by selfie_segmentation" in text
