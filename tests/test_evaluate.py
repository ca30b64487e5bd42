"""`vdf evaluate`: the models, both attacker pipelines, every purification, JSON keys and the HTML."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest
import torch
from click.testing import CliRunner

from vs_vdf.cli import main
from vs_vdf.engine import Protector
from vs_vdf.engine.codec import roundtrip
from vs_vdf.evaluation.analysis import Analyst
from vs_vdf.evaluation.evaluate import evaluate, one_line
from vs_vdf.evaluation.purify import PURIFIERS
from vs_vdf.media.frames import read_frames


@pytest.fixture(scope="module")
def analyst() -> Analyst:
    return Analyst()


@pytest.fixture(scope="module")
def clean(clips) -> torch.Tensor:
    return read_frames(clips["franck"], 4)


def test_a_clean_reencode_is_not_disrupted(analyst, clean):
    document = evaluate(clean, roundtrip(clean, 18, fps=Fraction(24)), Fraction(24), analyst=analyst,
                        pipelines=(), purifications=())
    assert document["fidelity"]["psnr_db"] > 40
    for name, entry in document["models"].items():
        assert entry["disrupted_fraction"] <= 0.05, name


def test_evaluation_sees_what_the_engine_check_saw(analyst, clean):
    protected, stats = Protector(preset="light", targets=("facemesh", "headpose"), max_steps=6).protect(clean)
    document = evaluate(clean, protected, Fraction(24), analyst=analyst, pipelines=(), purifications=())
    measured = document["per_frame"]["facemesh"]
    for record, value in zip(stats, measured):
        # the engine keeps the worst value over its check variants; the frames themselves score at least that
        assert value >= record.measures["facemesh"] - 1e-3
    engine = sum(s.success["facemesh"] for s in stats) / len(stats)
    assert document["models"]["facemesh"]["disrupted_fraction"] >= engine


def test_every_pipeline_and_purification_runs(clean):
    protected, _ = Protector(preset="light", targets=("facemesh", "headpose"), max_steps=2).protect(clean[:3])
    analyst = Analyst(models=("blazeface_short", "facemesh", "headpose", "selfie_segmentation"))
    document = evaluate(clean[:3], protected, Fraction(24), analyst=analyst)
    assert set(document["purification"]) == set(PURIFIERS)
    for name, entry in document["purification"].items():
        assert 20 < entry["fidelity"]["psnr_db"] < 60, name
        assert set(entry["models"]) == set(document["models"])
    ernerf, geneface = document["pipelines"]["ernerf"], document["pipelines"]["genefacepp"]
    assert ernerf["would_crash"] in (True, False) and 0 <= ernerf["background_plate_head_leak"] <= 1
    assert ernerf["models"]["facemesh"]["disrupted_fraction"] >= 0
    assert geneface["would_crash"] is False and "tracked_facemesh" in geneface


def test_a_first_frame_without_a_face_stops_the_genefacepp_path_and_the_rest_is_still_tracked(analyst, clean):
    """The protected video's opening frame hides the face, which stops GeneFace++'s tracking at frame 0; an
    attacker who cuts that frame gets the rest, so the tracked figures start at the first face found."""
    protected = clean[:3].clone()
    protected[0] = 0.5  # a flat grey frame: no face
    document = evaluate(clean[:3], protected, Fraction(24), analyst=analyst, pipelines=("genefacepp",),
                        purifications=())
    geneface = document["pipelines"]["genefacepp"]
    assert geneface["would_crash"] is True and geneface["frames_without_face"] == [0]
    tracked = geneface["tracked_facemesh"]
    assert tracked["from_frame"] == 1 and tracked["disrupted_fraction"] == 0 and tracked["nme_mean"] < 0.05
    assert geneface["tracked_headpose"]["from_frame"] == 1
    assert "tracked after GeneFace++ path 0% (from frame 1: the path stops at frame 0)" in one_line(document)


def test_cli_writes_the_design_keys_and_an_offline_html(clips, tmp_path):
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    result = CliRunner().invoke(main, ["evaluate", str(clips["franck"]), str(clips["franck"]), "--frames", "2",
                                       "--json", str(out_json), "--html", str(out_html),
                                       "--purify", "jpeg_75,resize_0.5", "--pipeline", "none", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("PSNR")
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    document = json.loads(out_json.read_text(), parse_constant=refuse)  # strict: no Infinity or NaN
    assert {"psnr_db", "ssim"} <= set(document["fidelity"])
    assert document["fidelity"]["psnr_db"] is None  # the clip against itself: identical frames
    assert document["models"]["headpose"]["pose_error_deg_mean"] == 0
    models = document["models"]
    for detector in ("blazeface_short", "blazeface_full", "mtcnn"):
        assert {"detection_rate_clean", "detection_rate_protected", "disrupted_fraction"} <= set(models[detector])
    for landmarks in ("facemesh", "facemesh_v1", "faceapi68", "faceapi68_tiny"):
        assert {"nme_mean", "nme_failure_rate", "disrupted_fraction"} <= set(models[landmarks])
    assert "pose_error_deg_mean" in models["headpose"]
    assert "iou_mean" in models["selfie_segmentation"]
    assert set(document["purification"]) == {"jpeg_75", "resize_0.5"}
    assert "models" in document["purification"]["jpeg_75"] and "retention" in document["purification"]["jpeg_75"]
    page = out_html.read_text()
    assert page.startswith("<!doctype html>") and "<img" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)


def test_cli_rejects_unknown_names_and_size_mismatch(clips):
    result = CliRunner().invoke(main, ["evaluate", str(clips["franck"]), str(clips["franck"]), "--purify", "dpir"])
    assert result.exit_code != 0 and "unknown dpir" in result.output
    result = CliRunner().invoke(main, ["evaluate", str(clips["franck"]), str(clips["no_face"]), "--frames", "2",
                                       "--pipeline", "none", "--purify", "none"])
    assert result.exit_code != 0 and "frame sizes differ" in result.output
