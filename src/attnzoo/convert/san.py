"""hszhao/SAN checkpoints -> attnzoo `san{10,15,19}_{pairwise,patchwise}`.

The official `model/san.py` and attnzoo's `models/san.py` use the same submodule names
(conv_in, bn_in, conv0..4, bn0..4, layer0..4.<i>.{bn1, sam.{conv1, conv2, conv3, conv_w.<j>,
conv_p}, bn2, conv}, fc), so the keys carry over unchanged once the shared machinery has
stripped DataParallel's `module.` prefix; nothing is dropped. The strict load that follows names
any key that does not fit (for example a pairwise checkpoint given to a patchwise model).
"""
from __future__ import annotations

from ..errors import UserError

SAN_MODELS = tuple(f"san{d}_{t}" for d in (10, 15, 19) for t in ("pairwise", "patchwise"))


def convert(state_dict: dict, model_name: str) -> dict:
    if model_name not in SAN_MODELS:
        raise UserError(f"--from san-official converts into SAN networks only ({', '.join(SAN_MODELS)}), "
                        f"not {model_name}")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}
