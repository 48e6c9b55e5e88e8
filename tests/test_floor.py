"""The supported floor is said once: pyproject's lower bounds are the releases CI tests the floor on."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR_PACKAGES = ("torch", "torchvision", "timm", "triton")  # named in the README too
EXTRA_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the onnx extra


def floor_pins() -> dict:
    text = (ROOT / "constraints-floor.txt").read_text()
    return dict(re.findall(r"^([a-z]+)==([0-9.]+)$", text, re.MULTILINE))


def test_pyproject_lower_bounds_are_the_tested_floor():
    floor = floor_pins()
    bounds = dict(re.findall(r'"([a-z]+)>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text()))
    for name in FLOOR_PACKAGES + EXTRA_PACKAGES:  # '2.11' in pyproject for '2.11.0' in the constraints
        assert floor[name] in (bounds[name], bounds[name] + ".0"), (name, floor.get(name), bounds.get(name))


def test_ci_runs_the_ops_layers_models_and_export_tests_on_the_floor():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c constraints-floor.txt" in ci
    assert "pytest -q tests/ops tests/layers tests/models tests/commands/test_export.py" in ci
    readme = (ROOT / "README.md").read_text()
    for name in FLOOR_PACKAGES:
        assert f"{name} {floor_pins()[name]}" in readme, name
