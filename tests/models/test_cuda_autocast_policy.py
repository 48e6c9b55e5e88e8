"""Every network family trains one step under autocast with CUDA's cast policy imposed on the CPU
(`tests/cuda_autocast.py`: softmax, log_softmax, sums, norms, ... come back in float32 while the
convolutions run in bf16/fp16), and its bf16 loss and gradients stay near float32's."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model

from ..cuda_autocast import cuda_autocast

FAMILIES = [  # name, image size, constructor options: tiny versions of every family's networks
    ("senet_cifar", 32, {"depth": 11, "num_classes": 10}),
    ("lsas_senet_cifar", 32, {"depth": 11, "num_classes": 10}),
    ("senet_resnet18", 32, {"num_classes": 10}),
    ("lsas_senet_resnet18", 32, {"num_classes": 10}),
    ("sb_vgg16_cifar", 32, {}),
    ("san10_pairwise", 64, {"layers": (1, 1, 1, 1, 1), "kernels": (3, 3, 3, 3, 3), "num_classes": 10}),
    ("san10_patchwise", 64, {"layers": (1, 1, 1, 1, 1), "kernels": (3, 3, 3, 3, 3), "num_classes": 10}),
    ("lesa_resnet50", 32, {"img_size": 32, "layers": (1, 1, 1, 1), "first_conv_stages": (1, 2),
                           "num_classes": 10}),
    ("lesa_resnet50", 32, {"img_size": 32, "layers": (1, 1, 1, 1), "first_conv_stages": (1, 2),
                           "num_classes": 10, "lesa_kwargs": {"pe_type": "detection_qr"}}),
    ("ida", 64, {"backbone": "resnet18", "num_classes": 5}),
]


def _step(model, x, y, multilabel, dtype):
    context = cuda_autocast(dtype) if dtype is not None else torch.autocast("cpu", enabled=False)
    with context:
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        loss = (F.binary_cross_entropy_with_logits(out.float(), y) if multilabel else
                F.cross_entropy(out.float(), y))
    loss.backward()
    return loss.detach(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name, size, kwargs", FAMILIES, ids=[f"{f[0]}-{i}" for i, f in enumerate(FAMILIES)])
def test_forward_backward_under_cuda_autocast_policy(name, size, kwargs, dtype=torch.bfloat16):
    """bf16 only: CPU fp16 convolutions take seconds; fp16 is checked on the SAN and LESA layers."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=g)
    multilabel = name == "ida"
    y = ((torch.rand(2, model.num_classes, generator=g) < 0.3).float() if multilabel else
         torch.randint(0, model.num_classes, (2,), generator=g))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss, grads = _step(model, x, y, multilabel, dtype)
    assert torch.isfinite(loss)
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    loss32, grads32 = _step(model, x, y, multilabel, None)
    assert grads.keys() == grads32.keys()
    for n, grad in grads.items():
        assert torch.isfinite(grad).all(), n
    # loose: these untrained networks amplify any rounding in train-mode BatchNorm over tiny batches
    assert abs(loss.item() - loss32.item()) <= 0.05 * max(1.0, loss32.item())


def test_the_helper_applies_cuda_policy_and_undoes_it():
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(4, 4, 1, 1)

    def dtypes():
        y = F.conv2d(x, w)
        return {"conv": y.dtype, "softmax": y.softmax(1).dtype, "sum": y.sum((2, 3)).dtype,
                "log_softmax": F.log_softmax(y, 1).dtype, "group_norm": F.group_norm(y, 2).dtype,
                "square": y.square().dtype, "mean": y.mean().dtype,
                "batch_norm": F.batch_norm(y, None, None, training=True).dtype,
                "reflect_pad": F.pad(y, (1, 1, 1, 1), mode="reflect").dtype}

    with torch.autocast("cpu", dtype=torch.bfloat16):
        cpu = dtypes()
    with cuda_autocast(torch.bfloat16):
        cuda = dtypes()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dtypes() == cpu  # the CPU policy is back
    bf16, fp32 = torch.bfloat16, torch.float32
    assert cuda == {"conv": bf16, "softmax": fp32, "sum": fp32, "log_softmax": fp32, "group_norm": fp32,
                    "square": fp32, "mean": bf16, "batch_norm": bf16, "reflect_pad": bf16}
    assert cpu["softmax"] == bf16 and cpu["reflect_pad"] == fp32  # what a plain CPU autocast test sees
