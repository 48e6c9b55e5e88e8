"""`attnzoo recipes`: the bundled recipes, each with its model, dataset and the paper's numbers."""
from __future__ import annotations


def run(args) -> int:
    from ..engine.config import read_yaml, recipe_names

    for name in recipe_names():
        data = read_yaml(name)
        paper = {k: v for k, v in (data.get("paper") or {}).items() if k != "source"}
        model = (data.get("model") or {}).get("name", "?")
        dataset = (data.get("data") or {}).get("name", "?")
        print(f"{name:<36} {model:<26} {dataset:<12} paper: {paper or '-'}")
    return 0
