"""timm's own model tests (`tests/test_models.py`, unmodified) over every attnzoo network.

    PYTHONPATH=src python benchmarks/timm_model_tests.py --timm-tests DIR/tests [-k EXPR]

DIR is a timm source tree of the installed timm's version (the PyPI sdist has it:
`pip download timm==VERSION --no-binary :all: --no-deps`). The test file is copied unchanged next
to a conftest that does what timm's CI does for its own networks, for attnzoo's:
- `import attnzoo` registers the networks, so timm's `list_models()` parametrizes the tests with them;
- only tests parametrized with an attnzoo network are kept (the rest test timm's networks);
- timm picks the networks of its forward_intermediates / features-getter tests by module name
  (`FEAT_INTER_FILTERS`, timm's own modules), which would leave attnzoo's out silently: the
  conftest adds attnzoo's networks to every module-filtered list, so those tests run too.
Every test runs on the CPU (TORCH_DEVICE=cpu, as timm's CI), including those without a CI marker;
the tests the issues were about run first. `--timeout S` stops the run after S seconds and reports
the tests not reached as "not run" (results are saved after each test).
Results go to benchmarks/results/timm_model_tests.{json,md}: one row per network and test, with
the outcome, and for a skip or failure its reason. Too slow for the suite: run it on its own.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = '''
import json
import os

import pytest
import timm

import attnzoo  # noqa: F401  registers attnzoo's networks with timm
from attnzoo.models import ATTNZOO_MODELS

_list_models = timm.list_models


def _list_models_with_attnzoo(*args, **kwargs):
    """timm's list_models; a list filtered by timm's module names also gets the attnzoo networks
    that pass the other filters."""
    names = _list_models(*args, **kwargs)
    if kwargs.get("module"):
        ours = _list_models(*args, **{**kwargs, "module": ""})
        names = sorted(set(names) | (set(ours) & ATTNZOO_MODELS))
    return names


timm.list_models = _list_models_with_attnzoo
RESULTS = []


# the tests the issues are about first, then timm's order; within a test, the smaller inputs first
FIRST = ("test_model_forward_fx_torchscript", "test_model_forward_features", "test_model_forward_intermediates",
         "test_model_forward_intermediates_features", "test_model_default_cfgs")


def _order(item):
    cfg = timm.models.get_pretrained_cfg(item.callspec.params["model_name"]).to_dict()
    test = item.originalname
    return (FIRST.index(test) if test in FIRST else len(FIRST), max(cfg["input_size"]))


def pytest_collection_modifyitems(config, items):
    keep = [i for i in items if getattr(i, "callspec", None) and i.callspec.params.get("model_name") in ATTNZOO_MODELS]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = sorted(keep, key=_order)  # stable: timm's order otherwise
    with open(os.environ["ATTNZOO_TIMM_RESULTS"] + ".selected", "w") as f:
        json.dump([dict(test=i.originalname, model=i.callspec.params["model_name"], marker=_marker(i))
                   for i in items], f)


def _marker(item):
    names = [m.name for m in item.iter_markers() if m.name not in ("parametrize", "timeout")]
    return ",".join(sorted(set(names))) or "(none: not run by timm's CI)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = report.longrepr[2]
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            text = crash.message if crash is not None else str(report.longrepr)
            reason = " ".join(text.split())[:300]
        RESULTS.append(dict(test=item.originalname, model=item.callspec.params["model_name"],
                            marker=_marker(item), outcome=report.outcome, seconds=round(report.duration, 2),
                            reason=reason))
        with open(os.environ["ATTNZOO_TIMM_RESULTS"], "w") as f:  # after each test: a stopped run keeps its results
            json.dump(RESULTS, f, indent=1)
'''


def run(tests_dir: Path, extra: list[str], timeout: float | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tests_dir / "test_models.py", tmp)
        Path(tmp, "conftest.py").write_text(CONFTEST)
        raw = Path(tmp, "results.json")
        env = dict(os.environ, ATTNZOO_TIMM_RESULTS=str(raw), TORCH_DEVICE="cpu",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "--rootdir", tmp, "test_models.py", *extra]
        try:
            subprocess.run(cmd, cwd=tmp, env=env, timeout=timeout)  # pytest's progress on this process's output
        except subprocess.TimeoutExpired:
            print(f"stopped after {timeout} s: the tests not reached are reported as not run")
        if not raw.exists():
            sys.exit("pytest produced no results (see its output above)")
        results = json.loads(raw.read_text())
        done = {(r["model"], r["test"]) for r in results}
        selected = json.loads(Path(str(raw) + ".selected").read_text())
        return results + [dict(s, outcome="not run", seconds=0, reason="stopped at the time limit (--timeout)")
                          for s in selected if (s["model"], s["test"]) not in done]


def markdown(results: list[dict], timm_version: str, source: str) -> str:
    counts = Counter(r["outcome"] for r in results)
    tests = sorted({r["test"] for r in results})
    by_model = defaultdict(dict)
    for r in results:
        by_model[r["model"]][r["test"]] = r
    short = {"passed": "pass", "failed": "FAIL", "skipped": "skip", "not run": "not run"}
    lines = [f"# timm {timm_version} `tests/test_models.py` over attnzoo's networks", "",
             f"Source: {source}. Command: `PYTHONPATH=src python benchmarks/timm_model_tests.py "
             "--timm-tests DIR/tests`.", "",
             f"**{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, "
             f"{counts['not run']} not run** of {len(results)} selected.", "",
             "Tests and their CI markers: " + "; ".join(
                 f"`{t}` ({next(r['marker'] for r in results if r['test'] == t)})" for t in tests), "",
             "| network | " + " | ".join(t.removeprefix("test_model_").removeprefix("test_") for t in tests) + " |",
             "|---|" + "---|" * len(tests)]
    for model in sorted(by_model):
        row = by_model[model]
        lines.append(f"| {model} | " + " | ".join(
            short[row[t]["outcome"]] if t in row else "not run" for t in tests) + " |")
    notes = [r for r in results if r["outcome"] in ("failed", "skipped")]
    if notes:
        lines += ["", "## Not passed", "", "| network | test | outcome | reason |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['test']} | {r['outcome']} | {r['reason'].replace('|', '/')} |"
                  for r in sorted(notes, key=lambda r: (r["model"], r["test"]))]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm-tests", type=Path, required=True, help="the tests/ folder of a timm source tree")
    parser.add_argument("--source", default="", help="where the test file came from, for the report")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "timm_model_tests")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds; the rest is 'not run'")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after `--` (e.g. -k fx)")
    args = parser.parse_args()
    if not (args.timm_tests / "test_models.py").is_file():
        sys.exit(f"{args.timm_tests} has no test_models.py; give the tests/ folder of a timm source tree")
    import timm
    results = run(args.timm_tests, args.pytest_args, args.timeout)
    source = args.source or f"timm {timm.__version__} source, {args.timm_tests}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        dict(timm=timm.__version__, source=source, results=results), indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, timm.__version__, source))
    counts = Counter(r["outcome"] for r in results)
    print(f"{dict(counts)} -> {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
