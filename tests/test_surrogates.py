"""Surrogates: parity with the reference runtimes, the chain on real frames, and gradients."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vs_vdf import samples, surrogates, weights
from vs_vdf.surrogates import bisenet
from vs_vdf.surrogates.boxes import iou
from vs_vdf.surrogates.chain import Chain
from vs_vdf.surrogates.headpose import angular_error_degrees

TFLITE_MODELS = [
    "blazeface_short", "blazeface_full", "blazeface_back", "facemesh", "facemesh_v1", "iris",
    "selfie_segmentation", "selfie_segmentation_landscape",
]
FACEAPI_REFERENCE = Path(__file__).parent / "faceapi_node"


@pytest.fixture(scope="module")
def real_frames() -> torch.Tensor:
    """Three real frames: two consecutive ones of franck.mp4 and one of WolfgangLanger_Pexels.mp4, its
    centre cut to the same 5:4 shape and scaled to the same 360 x 288."""
    franck = samples.read_frames("franck", 2)
    wolfgang = samples.read_frames("wolfgang", 1, start=10)[..., 95:545]
    wolfgang = F.interpolate(wolfgang, size=franck.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    return torch.cat([franck, wolfgang])


@pytest.fixture(scope="module")
def stills() -> torch.Tensor:
    """Three full-size (720 x 576) stills of the franck clip with the head turned."""
    import cv2

    images = [cv2.cvtColor(cv2.imread(str(samples.path(n))), cv2.COLOR_BGR2RGB)
              for n in ("franck_02221", "franck_03909", "franck_04117")]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


def _relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("name", TFLITE_MODELS)
def test_tflite_port_matches_litert_on_real_frames(name, real_frames):
    from ai_edge_litert.interpreter import Interpreter

    surrogate = surrogates.load(name)
    interpreter = Interpreter(model_path=str(weights.path(name)))
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    _, height, width, _ = source["shape"]
    pixels = F.interpolate(real_frames, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    pixels = pixels.permute(0, 2, 3, 1).contiguous()
    if name.startswith("blazeface"):
        pixels = pixels * 2 - 1
    ours = surrogate.net(pixels)
    ours = ours if isinstance(ours, tuple) else (ours,)
    for frame in range(pixels.shape[0]):
        interpreter.set_tensor(source["index"], pixels[frame:frame + 1].numpy())
        interpreter.invoke()
        references = [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]
        assert len(references) == len(ours)
        for output, reference in zip(ours, references):
            assert tuple(output.shape[1:]) == reference.shape[1:]
            assert _relative_error(output[frame:frame + 1].numpy(), reference) <= 1e-4, (name, frame)


def test_tflite_layers_run_channels_last_whatever_the_input_layout(real_frames):
    """Max pooling in NCHW memory order is up to 10x slower on the CPU, and the engine feeds the nets crops
    (NCHW tensors seen as NHWC): every convolution and pooling must get channels-last tensors whatever the
    input's layout, with the same result."""
    from vs_vdf.surrogates.tflite_torch import _Conv, _Pool

    net = surrogates.load("facemesh").net
    pixels = F.interpolate(real_frames, size=(192, 192), mode="bilinear", antialias=True,
                           align_corners=False).contiguous()  # NCHW in memory, as a crop's grid sampling gives
    layouts: list[bool] = []
    hooks = [op.register_forward_pre_hook(
        lambda _, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
        for op in net.ops if isinstance(op, (_Conv, _Pool))]
    try:
        as_cropped = net(pixels.permute(0, 2, 3, 1))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(layouts) > 10 and all(layouts)
    for ours, plain in zip(as_cropped, net(pixels.permute(0, 2, 3, 1).contiguous())):
        torch.testing.assert_close(ours, plain, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["faceapi68", "faceapi68_tiny"])
def test_faceapi_port_matches_face_api_js(name, real_frames, tmp_path):
    if shutil.which("node") is None or not (FACEAPI_REFERENCE / "node_modules").is_dir():
        pytest.skip("REFERENCE MISSING: node or tests/faceapi_node/node_modules is absent (scripts/setup installs it)")
    surrogate = surrogates.load(name)
    crops = F.interpolate(real_frames[:, :, :, 36:324], size=(112, 112), mode="bilinear", antialias=True,
                          align_corners=False).permute(0, 2, 3, 1).contiguous() * 255
    crops.numpy().astype(np.float32).tofile(tmp_path / "input.f32")
    manifest = weights.path(name)
    subprocess.run(["node", str(FACEAPI_REFERENCE / "landmarks68.cjs"), str(manifest.parent), manifest.name,
                    str(tmp_path / "input.f32"), str(crops.shape[0]), str(tmp_path / "output.f32")],
                   check=True, capture_output=True)
    reference = np.fromfile(tmp_path / "output.f32", dtype=np.float32).reshape(-1, 136)
    ours = surrogate.net(crops).numpy()
    assert np.abs(ours - reference).max() <= 1e-4  # landmarks are fractions of the crop size


@pytest.mark.parametrize("sample", ["franck", "wolfgang"])
def test_tinyface_port_matches_face_api_js(sample, tmp_path):
    """The held-out detector: raw outputs and located faces as face-api.js computes them (node)."""
    if shutil.which("node") is None or not (FACEAPI_REFERENCE / "node_modules").is_dir():
        pytest.skip("REFERENCE MISSING: node or tests/faceapi_node/node_modules is absent (scripts/setup installs it)")
    frame = samples.read_frames(sample, 1)
    image = (frame[0].permute(1, 2, 0) * 255).contiguous().numpy().astype(np.float32)
    image.tofile(tmp_path / "input.f32")
    manifest = weights.path("tinyface")
    subprocess.run(["node", str(FACEAPI_REFERENCE / "tinyface.cjs"), str(manifest.parent), str(tmp_path / "input.f32"),
                    str(image.shape[0]), str(image.shape[1]), str(tmp_path / "raw.f32"), str(tmp_path / "boxes.json")],
                   check=True, capture_output=True)
    detector = surrogates.load("tinyface")
    reference = np.fromfile(tmp_path / "raw.f32", dtype=np.float32).reshape(13, 13, 5, 5)
    assert _relative_error(detector.raw(frame)[0].numpy(), reference) <= 1e-4
    faces = detector.detect(frame)[0]
    located = np.array(json.loads((tmp_path / "boxes.json").read_text())).reshape(-1, 5)
    assert len(faces) == len(located)
    boxes = faces.boxes.numpy()
    assert np.abs(np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]] - located[:, :4]).max(initial=0) < 1e-2
    assert np.abs(faces.scores.numpy() - located[:, 4]).max(initial=0) < 1e-4


def test_blazeface_finds_the_face_in_each_sample(chain):
    for name in ("franck", "wolfgang"):
        analysis = chain(samples.read_frames(name, 2))
        assert analysis.face_found.all(), name


def test_facemesh_chain_agrees_with_faceapi68(chain, real_frames):
    analysis = chain(real_frames)
    mesh, ibug = analysis.facemesh[..., :2], analysis.faceapi68
    face_width = (mesh[:, 454, 0] - mesh[:, 234, 0]).abs()
    for mesh_id, ibug_id in ((33, 36), (263, 45), (61, 48), (291, 54)):  # eye corners, mouth corners
        distance = (mesh[:, mesh_id] - ibug[:, ibug_id]).norm(dim=-1)
        assert (distance <= 0.05 * face_width).all(), (mesh_id, distance / face_width)


def test_mtcnn_finds_the_same_face(chain, real_frames, stills):
    """MTCNN's boxes run from the forehead to the chin while BlazeFace's start at the brows, so box
    IoU between the two is 0.67-0.76 on these frames: the boxes must overlap that much, and MTCNN's
    five points must sit on FaceMesh's eye centres and mouth corners (within 5% of face width)."""
    for frames in (real_frames, stills):
        analysis = chain(frames)
        mesh = analysis.facemesh[..., :2]
        face_width = (mesh[:, 454, 0] - mesh[:, 234, 0]).abs()
        for frame, faces in enumerate(analysis.mtcnn):
            assert len(faces) >= 1
            assert iou(faces.boxes[:1], analysis.boxes[frame:frame + 1]).item() >= 0.65
            eyes = torch.stack([mesh[frame, [33, 133]].mean(0), mesh[frame, [362, 263]].mean(0)])
            expected = torch.cat([eyes, mesh[frame, [61, 291]]])
            distance = (faces.points[0, [0, 1, 3, 4]] - expected).norm(dim=-1)
            assert (distance <= 0.05 * face_width[frame]).all(), (frame, distance / face_width[frame])


def test_head_pose_mirrors_and_is_stable(chain, real_frames, stills):
    # Stills with a clearly turned head (|yaw| > 3 degrees): the sign must flip in the mirror image;
    # FaceMesh is not exactly mirror-symmetric, so magnitudes may differ by a degree or two.
    analysis, mirrored = chain(stills), chain(stills.flip(-1))
    pitch, yaw, roll = analysis.pose["angles"].unbind(-1)
    m_pitch, m_yaw, m_roll = mirrored.pose["angles"].unbind(-1)
    assert (yaw.abs() > 3).all()
    assert (torch.sign(yaw) == -torch.sign(m_yaw)).all() and (yaw + m_yaw).abs().max() < 2.5
    turned = roll.abs() > 2
    assert turned.any() and (torch.sign(roll[turned]) == -torch.sign(m_roll[turned])).all()
    assert (roll + m_roll).abs().max() < 2.5 and (pitch - m_pitch).abs().max() < 2.5
    rotation = chain(real_frames).pose["rotation"]
    assert angular_error_degrees(rotation[:1], rotation[1:2]).item() < 2.0  # consecutive frames, still head


def test_every_chain_output_has_a_finite_nonzero_gradient(chain, real_frames):
    outputs = {
        "blazeface": lambda a, x: chain.models["blazeface_short"].scores(x).max(-1).values.sum(),
        "facemesh": lambda a, x: a.facemesh[..., :2].sum(),
        "presence": lambda a, x: a.facemesh_presence_logit.sum(),
        "pose": lambda a, x: a.pose["angles"].sum(),
        "faceapi68": lambda a, x: a.faceapi68.sum(),
        "selfie": lambda a, x: a.person.sum(),
        "mtcnn_pnet": lambda a, x: sum(p.max() for _, p, _ in chain.models["mtcnn"].pyramid(x)),
        "mtcnn_onet": lambda a, x: sum(t.sum() for t in chain.models["mtcnn"].output_net(
            x, torch.cat([f.boxes[:1] for f in a.mtcnn]), torch.arange(x.shape[0]))[::2]),
    }
    for name, objective in outputs.items():
        frames = real_frames.clone().requires_grad_()
        objective(chain(frames), frames).backward()
        assert frames.grad.isfinite().all() and frames.grad.abs().sum() > 0, name


def test_reference_rois_keep_landmarks_measurable_without_detection(chain, real_frames):
    clean = chain(real_frames)
    blank = torch.zeros_like(real_frames)
    analysis = chain(blank, reference=clean)
    assert not analysis.face_found.any()
    assert analysis.facemesh.isfinite().all() and analysis.faceapi68.isfinite().all()


def test_unknown_surrogate_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown surrogate 'nope'"):
        surrogates.load("nope")


# ------------------------------------------------------------------ BiSeNet (user-supplied checkpoint)

def _original_layout_checkpoint(path: Path) -> dict:
    state = {k: (torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v) * 0.1)
             if v.is_floating_point() else v for k, v in bisenet.BiSeNet().state_dict().items()}
    torch.save(state, path)
    return state


def test_bisenet_loads_a_checkpoint_in_the_original_layout(tmp_path, real_frames):
    checkpoint = tmp_path / "79999_iter.pth"
    state = _original_layout_checkpoint(checkpoint)
    parser = surrogates.load("bisenet", checkpoint=checkpoint)
    assert torch.equal(parser.net.state_dict()["cp.resnet.conv1.weight"], state["cp.resnet.conv1.weight"])
    frames = real_frames[:1].clone().requires_grad_()
    probabilities = parser(frames)
    assert probabilities.shape == (1, 19, 512, 512)
    probabilities[:, 0].sum().backward()
    assert frames.grad.isfinite().all() and frames.grad.abs().sum() > 0


def test_bisenet_without_a_file_says_what_to_pass():
    with pytest.raises(bisenet.CheckpointError, match="79999_iter.pth"):
        surrogates.load("bisenet")
    with pytest.raises(bisenet.CheckpointError, match="not found"):
        surrogates.load("bisenet", checkpoint="/nonexistent/79999_iter.pth")


def test_bisenet_refuses_a_checkpoint_of_another_model(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(bisenet.CheckpointError, match="not a BiSeNet face parser.*missing"):
        surrogates.load("bisenet", checkpoint=other)


class _Payload:
    def __reduce__(self):
        return (print, ("this checkpoint runs code",))


def test_bisenet_refuses_a_checkpoint_that_would_run_code(tmp_path):
    hostile = tmp_path / "hostile.pth"
    torch.save({"payload": _Payload()}, hostile)
    with pytest.raises(bisenet.CheckpointError, match="not a plain-weights") as refused:
        surrogates.load("bisenet", checkpoint=hostile)
    assert "weights_only=False" not in str(refused.value)  # never advise the unsafe way to load it
