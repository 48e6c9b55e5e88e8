"""attnzoo convert --from ida-official: official IDA checkpoints -> attnzoo state dicts."""
import pytest
import torch

import attnzoo
from attnzoo.convert import ida as convert_ida
from attnzoo.errors import UserError


def official_layout(model) -> dict:
    """attnzoo IDA state -> the official module names (inverse of attnzoo.convert.ida)."""
    inverse = {"q": "att.q_proj", "k": "att.k_proj", "v": "att.v_proj", "proj": "att.out_proj",
               "fc1": "linear1", "fc2": "linear2", "norm1": "norm1", "norm2": "norm2"}
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # FrozenBatchNorm2d has none
        if key.startswith("backbone."):
            out["backbone.0.body." + key[len("backbone."):]] = value
        elif key == "head.weight" and value.ndim == 3:
            for h in range(value.shape[0]):
                out[f"clf.head.{h}.weight"] = value[h][:, :, None, None].clone()
        elif key.startswith("head.layers."):
            _, _, idx, mod, leaf = key.split(".")
            out[f"clf.att_layers.layers.{idx}.{inverse[mod]}.{leaf}"] = value
        else:
            out["clf." + key[len("head."):]] = value
    return out


@pytest.mark.parametrize("head", ["ida", "linear"])
def test_convert_official_checkpoint(tmp_path, head):
    from attnzoo.convert import convert_checkpoint
    from attnzoo.engine.checkpoint import read_weights

    kwargs = dict(backbone="resnet18", num_classes=3, head=head)
    source = attnzoo.create_model("ida", **kwargs).eval()
    official = official_layout(source)
    converted = convert_ida.convert(dict(official), "ida")
    assert set(converted) == set(source.state_dict())
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in official.items()}}, path)
    out = tmp_path / "ida.safetensors"
    convert_checkpoint("ida-official", path, "ida", out, model_kwargs=kwargs)
    state, _ = read_weights(out)
    target = attnzoo.create_model("ida", **kwargs).eval()
    target.load_state_dict(state)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(source(x), target(x))


def test_convert_refuses_foreign_keys(tmp_path):
    from attnzoo.convert import convert_checkpoint

    kwargs = dict(backbone="resnet18", num_classes=3)
    official = official_layout(attnzoo.create_model("ida", **kwargs))
    official["clf.extra.weight"] = torch.zeros(1)
    path = tmp_path / "c.pth"
    torch.save(official, path)
    with pytest.raises(UserError, match="unexpected keys: clf.extra.weight"):
        convert_checkpoint("ida-official", path, "ida", tmp_path / "o.safetensors", model_kwargs=kwargs)
    assert not (tmp_path / "o.safetensors").exists()
    official.pop("clf.extra.weight")
    torch.save(official, path)
    with pytest.raises(UserError, match="shape mismatches: head.weight"):
        convert_checkpoint("ida-official", path, "ida", tmp_path / "o.safetensors",
                           model_kwargs=dict(kwargs, num_classes=5))
