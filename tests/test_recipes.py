"""Every bundled recipe builds and runs two steps on synthetic data of its shape (--dry-run)."""
import pytest

from attnzoo.cli import main
from attnzoo.engine.config import load_config, recipe_names


@pytest.mark.parametrize("recipe", recipe_names())
def test_recipe_dry_runs(recipe, tmp_path, capsys):
    cfg = load_config(recipe)
    assert cfg.paper and "source" in cfg.paper, "a recipe names the numbers its seed reports"
    assert main(["train", recipe, "--dry-run", "--quiet", "--out-dir", str(tmp_path)]) == 0
    assert "dry run of" in capsys.readouterr().out
