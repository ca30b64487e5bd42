"""The engine, the evaluation and the node on a CUDA GPU; skipped where there is none.

Run on a machine with a GPU: ``scripts/test -k cuda``. Every model, objective, transform and metric
runs here with tensors on the GPU, so a tensor made on the wrong device fails this module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vs_vdf import samples
from vs_vdf.engine import Protector, metrics
from vs_vdf.engine.targets import default_targets
from test_attacker_models import added, checkpoints, franck, user_models  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return samples.read_frames("franck", 3)


@pytest.mark.parametrize("options", [dict(), dict(method="per-frame"), dict(joint=True),
                                     dict(method="vdf-reference", max_steps=2), dict(delivery={"crf": 23})])
def test_protector_on_cuda_with_every_default_target(frames, options):
    protector = Protector("light", device="cuda", **{"max_steps": 3, **options})
    out, stats = protector.protect(frames.cuda())
    assert out.is_cuda and out.shape == frames.shape
    assert all(set(s.success) == set(protector.targets) for s in stats)
    assert set(protector.targets) == set(default_targets())
    assert float(metrics.psnr(out.cpu(), frames).mean()) > 30


def test_cuda_and_cpu_agree_on_the_clean_analysis(frames):
    on_gpu = Protector("light", device="cuda").objectives.reference(frames.cuda())
    on_cpu = Protector("light", device="cpu").objectives.reference(frames)
    assert torch.allclose(on_gpu.boxes.cpu(), on_cpu.boxes, atol=0.5)
    assert torch.allclose(on_gpu.landmarks["facemesh"].cpu(), on_cpu.landmarks["facemesh"], atol=0.5)


def test_large_frames_on_cuda(frames):
    large = F.interpolate(frames[:2], scale_factor=3, mode="bilinear", align_corners=False).clamp(0, 1)
    out, stats = Protector("light", device="cuda", max_steps=2).protect(large.cuda())
    assert out.is_cuda and all(s.face for s in stats)


def test_evaluation_pipelines_on_cuda(frames):
    from vs_vdf.evaluation.analysis import Analyst
    from vs_vdf.evaluation.pipelines import ernerf

    analyst = Analyst(device="cuda")
    summary = analyst.summary(analyst.compare(frames.cuda(), ernerf(frames.cuda(), 25)))
    assert "facemesh" in summary


def test_node_on_cuda(clips):
    import vapoursynth as vs

    import vs_vdf

    clip = vs.core.bs.VideoSource(source=str(clips["franck"]), cachemode=0)
    out = vs_vdf.protect(clip, device="cuda", max_steps=1, chunk=3, targets="facemesh,headpose")
    assert all(out.get_frame(n).props["VdfFace"] == 1 for n in range(3))


def test_attackers_models_on_cuda(added, franck):
    from vs_vdf.engine.objectives import Objectives

    names = ("s3fd", "fan2d", "fan2d_pose", "bisenet")
    on_gpu, on_cpu = Objectives(names, device="cuda"), Objectives(names)
    ref, ref_cpu = on_gpu.reference(franck.cuda()), on_cpu.reference(franck)
    assert torch.allclose(ref.s3fd_boxes.cpu(), ref_cpu.s3fd_boxes, atol=0.05)
    pixels = franck.cuda().requires_grad_()
    sum(on_gpu.losses(pixels, ref).values()).sum().backward()
    assert pixels.grad.isfinite().all() and pixels.grad.abs().sum() > 0
    assert set(on_gpu.measures(franck.cuda(), ref, names)) == set(names)
