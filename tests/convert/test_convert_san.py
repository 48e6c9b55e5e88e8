"""attnzoo convert --from san-official: official SAN state dicts keep their keys."""
import pytest

from attnzoo.convert.san import convert
from attnzoo.errors import UserError
from attnzoo.models import san


def _tiny(sa_type):
    return san.SAN(sa_type, layers=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3), num_classes=5)


def test_convert_keeps_official_keys_and_strips_module_prefix():
    model = _tiny("patchwise")
    official = {f"module.{k}": v for k, v in model.state_dict().items()}
    converted = convert(official, "san10_patchwise")
    assert list(converted) == list(model.state_dict())
    assert all(converted[k] is official[f"module.{k}"] for k in converted)
    _tiny("patchwise").load_state_dict(converted, strict=True)
    with pytest.raises(UserError, match="SAN networks only"):
        convert(official, "resnet20_cifar")
