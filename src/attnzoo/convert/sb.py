"""Official Shift-and-Balance checkpoints (`yuranusduke/Shift_and_Balance_Attention`,
`--from sb-official`) -> attnzoo key names of `vgg16_cifar`, `se_vgg16_cifar`, `sb_vgg16_cifar`.

    layerS.i.0 / layerS.i.1   (conv / BatchNorm2d of the i-th conv of stage S)  -> stages.{S-1}.{3i} / {3i+1}
    sbS.lambd                 -> attns.{S-1}.lam
    sbS.SB.0/1/3/4, seS.SE.0/1/3/4 (fc1, bn1, fc2, bn2)  -> attns.{S-1}.fc1 / bn1 / fc2 / bn2
    fc.0 / fc.2               -> pre_logits.0 / fc

Tensors are unchanged. The seed saves whole pickled models (`t.save(model)`); load and save its
`state_dict()` in the seed's own environment first: attnzoo never unpickles code. Keys that match
none of these rules are passed through unchanged, so strict loading reports them.
"""
import re

_CONV = re.compile(r"^layer(?P<s>[1-4])\.(?P<i>\d+)\.(?P<j>[01])\.(?P<rest>.+)$")
_ATTN = re.compile(r"^(?:sb(?P<s1>[1-4])\.SB|se(?P<s2>[1-4])\.SE)\.(?P<i>[0134])\.(?P<rest>.+)$")
_LAMBDA = re.compile(r"^sb(?P<s>[1-4])\.lambd$")
_HEAD = {"fc.0": "pre_logits.0", "fc.2": "fc"}
_MLP = {"0": "fc1", "1": "bn1", "3": "fc2", "4": "bn2"}


def _rename(key: str) -> str:
    m = _CONV.match(key)
    if m:
        return f"stages.{int(m['s']) - 1}.{3 * int(m['i']) + int(m['j'])}.{m['rest']}"
    m = _ATTN.match(key)
    if m:
        return f"attns.{int(m['s1'] or m['s2']) - 1}.{_MLP[m['i']]}.{m['rest']}"
    m = _LAMBDA.match(key)
    if m:
        return f"attns.{int(m['s']) - 1}.lam"
    head, _, rest = key.rpartition(".")
    if head in _HEAD:
        return f"{_HEAD[head]}.{rest}"
    return key


def convert(state_dict: dict, model_name: str) -> dict:
    """Rename an official SB VGG-16 state dict (already without `module.`) to attnzoo's keys."""
    return {_rename(k): v for k, v in state_dict.items()}
