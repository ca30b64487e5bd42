"""The contracts that keep one piece of knowledge in one place: the public signature, the native shim's
arguments, the target table, methods as data, and the command line's single error boundary."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vs_vdf
from vs_vdf import node, samples
from vs_vdf.cli import main
from vs_vdf.engine import Protector, methods, targets
from vs_vdf.engine.transforms import Family, Transform

ROOT = Path(__file__).parent.parent
C_TYPES = {"str": "data", "float": "float", "int": "int"}


def test_vs_vdf_protect_is_the_node_function_with_its_real_signature():
    assert vs_vdf.protect is node.protect
    parameters = inspect.signature(vs_vdf.protect).parameters
    assert list(parameters)[:2] == ["clip", "preset"] and parameters["preset"].kind is inspect.Parameter.KEYWORD_ONLY


def test_the_native_shim_takes_exactly_the_python_options():
    source = (ROOT / "filters" / "vdf_plugin.c").read_text()
    declared = re.search(r'registerFunction\("Protect",\s*((?:"[^"]*"\s*)+),', source).group(1)
    shim = [tuple(item.split(":")[:2]) for item in "".join(re.findall(r'"([^"]*)"', declared)).split(";") if item]
    python = [(name, p.annotation) for name, p in inspect.signature(node.protect).parameters.items()
              if name not in node.PYTHON_ONLY]
    assert [name for name, _ in shim] == [name for name, _ in python]
    for (name, c_type), (_, annotation) in zip(shim[1:], python[1:]):  # one of the Python types is the C one
        assert c_type in {C_TYPES.get(part.split("[")[0]) for part in annotation.split(" | ")}, name


def test_protector_takes_keywords_after_the_preset():
    with pytest.raises(TypeError):
        Protector("light", ("facemesh",))


def test_every_target_has_a_kind_and_the_report_uses_its_keys():
    assert set(targets.TABLE) == set(targets.TARGETS)
    assert "facemesh_v1" not in targets.DEFAULT_TARGETS and "bisenet" not in targets.DEFAULT_TARGETS
    value = torch.tensor([0.05, 0.1, 0.2])
    assert targets.disrupted("facemesh", value).tolist() == [False, True, True]
    assert targets.disrupted("facemesh", value, margin=1.5).tolist() == [False, False, True]
    assert targets.disrupted("selfie_segmentation", torch.tensor([0.4, 0.6])).tolist() == [True, False]
    assert targets.disrupted("blazeface_short", torch.tensor([0.3, 0.9]), detector_threshold=0.5).tolist() == [True, False]
    assert targets.least_disrupted("headpose", [7.0, 3.0]) == 3.0
    assert targets.least_disrupted("selfie_segmentation", [0.2, 0.7]) == 0.7
    assert "landmark NME \u2265 0.1" in targets.rules_text()


def test_methods_are_data_the_loop_reads():
    assert set(methods.METHODS) == {"vdf", "per-frame", "vdf-reference"}
    from vs_vdf.engine.presets import get

    balanced = get("balanced")
    vdf, baseline, released = (methods.METHODS[n].settings(balanced) for n in ("vdf", "per-frame", "vdf-reference"))
    assert vdf.inherit == 1.0 and baseline.inherit == 0.0 and released.inherit == 0.8
    assert (released.epsilon, released.max_steps, released.first_check_every) == (0.05, 3000, 5)
    assert vdf.variants == balanced.check and len(released.variants) == 5
    assert not methods.METHODS["per-frame"].joint and methods.METHODS["vdf"].joint


def test_transform_kinds_are_checked_when_made():
    with pytest.raises(ValueError, match="unknown transform 'jpg'"):
        Transform("jpg", 50)
    with pytest.raises(ValueError, match="unknown transform"):
        Family("webp", 50, 90)


def test_errors_the_package_raises_reach_the_user_as_one_line(tmp_path, monkeypatch):
    clip = samples.path("franck")
    monkeypatch.setenv("VS_VDF_CACHE", str(tmp_path / "empty"))  # the models are missing
    result = CliRunner().invoke(main, ["evaluate", str(clip), str(clip), "--frames", "1", "--pipeline", "none",
                                       "--purify", "none", "--device", "cpu"])
    assert result.exit_code == 1
    assert "is missing" in result.output and "vdf models fetch" in result.output
    assert "Traceback" not in result.output
