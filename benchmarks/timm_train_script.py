"""Export timm's train.py of given versions from a timm git checkout, for gpu_check's part 6.

gpu_check compares `attnzoo train` with the train.py of the timm version installed where it runs,
read from benchmarks/out/timm/<version>/train.py (an ignored path: carry it to the GPU machine).
The GPU machine has no network, so export here every version it may have:

    python benchmarks/timm_train_script.py --checkout /work/ref/timm [--versions 1.0.28 1.0.27]

Without --versions: every v1.* tag of the checkout. Prints what it wrote.
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "timm"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", type=Path, required=True, help="a git clone of huggingface/pytorch-image-models")
    p.add_argument("--versions", nargs="*", help="e.g. 1.0.28 (default: every v1.* tag)")
    args = p.parse_args()
    git = ["git", "-C", str(args.checkout)]
    tags = args.versions and [f"v{v.lstrip('v')}" for v in args.versions]
    tags = tags or subprocess.run(git + ["tag", "--list", "v1.*"], capture_output=True, text=True,
                                  check=True).stdout.split()
    for tag in tags:
        shown = subprocess.run(git + ["show", f"{tag}:train.py"], capture_output=True, text=True)
        if shown.returncode:
            print(f"{tag}: no train.py ({shown.stderr.strip()[:200]})")
            continue
        path = OUT / tag[1:] / "train.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(shown.stdout)
        print(f"{tag}: {path}")


if __name__ == "__main__":
    main()
