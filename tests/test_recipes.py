"""Every bundled recipe builds and runs two steps on synthetic data of its shape (--dry-run)."""
import pytest

from attnzoo.cli import main
from attnzoo.engine.config import load_config, recipe_names


def smallest_img_size(model_name: str) -> int:
    """The smallest input each network takes, so the 24 dry runs stay cheap: SAN's 7x7 reflection
    padding needs a 4x4 last stage (stride 32); every other network runs at CIFAR's 32 px."""
    return 128 if model_name.startswith("san") else 32


@pytest.mark.parametrize("recipe", recipe_names())
def test_recipe_dry_runs(recipe, tmp_path, capsys):
    cfg = load_config(recipe)
    assert cfg.paper and "source" in cfg.paper, "a recipe names the numbers its seed reports"
    size = smallest_img_size(cfg.model.name)
    overrides = ["--set", f"data.img_size={size}"]
    if "img_size" in cfg.model.kwargs:  # LESA builds its position embeddings for one size
        overrides += ["--set", f"model.kwargs.img_size={size}"]
    argv = ["train", recipe, *overrides, "--dry-run", "--quiet", "--out-dir", str(tmp_path)]
    assert main(argv) == 0
    assert "dry run of" in capsys.readouterr().out
