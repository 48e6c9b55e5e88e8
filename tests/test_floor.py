"""The supported floor is said once: pyproject's lower bounds are the releases CI tests the floor on."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR_PACKAGES = ("torch", "torchvision", "timm", "triton")


def _pins(text: str, operator: str) -> dict:
    return dict(re.findall(rf'^\s*"?([a-z]+){re.escape(operator)}([0-9.]+)', text, flags=re.MULTILINE))


def test_pyproject_lower_bounds_are_the_tested_floor():
    floor = _pins((ROOT / "constraints-floor.txt").read_text(), "==")
    bounds = _pins((ROOT / "pyproject.toml").read_text().replace("[", "\n"), ">=")
    assert set(FLOOR_PACKAGES) <= set(floor), floor
    for name in FLOOR_PACKAGES:  # '2.11' in pyproject for '2.11.0' in the constraints
        assert floor[name] in (bounds[name], bounds[name] + ".0"), (name, floor[name], bounds[name])


def test_ci_runs_the_ops_layers_and_models_tests_on_the_floor():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c constraints-floor.txt" in ci
    assert "pytest -q tests/ops tests/layers tests/models" in ci
    readme = (ROOT / "README.md").read_text()
    for name in FLOOR_PACKAGES:
        assert f"{name} {floor_version(name)}" in readme, name


def floor_version(name: str) -> str:
    return _pins((ROOT / "constraints-floor.txt").read_text(), "==")[name]
