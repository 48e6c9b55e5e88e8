"""The IDA interventional classifier: shapes, formulas against a per-head loop, official options."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo.errors import UserError
from attnzoo.layers.intervention import InterventionalClassifier


def loop_reference(head: InterventionalClassifier, x: torch.Tensor) -> torch.Tensor:
    """The paper's formulas written head by head (a plain loop), for comparison."""
    n, _, hh, ww = x.shape
    d, nh, c = head.head_dim, head.num_heads, head.num_classes
    feats = []
    for h in range(nh):
        xh = x[:, h * d:(h + 1) * d].flatten(2)  # (N, d, P)
        w = head.weight[h]  # (C, d)
        score = torch.einsum("cd,ndp->ncp", w, xh) / (w.norm(dim=1)[None, :, None] + head.beta)
        feats.append(torch.einsum("ncp,ndp->ncd", score.softmax(-1), xh))
    if head.token_layout == "head":
        tokens = torch.stack(feats, dim=2)  # (N, C, heads, d)
    else:
        tokens = torch.stack(feats, dim=-1).reshape(n, c, nh, d)  # the official view
    tokens = tokens.reshape(n * c, nh, d)
    for layer in head.layers:
        q, k, v = layer.q(tokens), layer.k(tokens), layer.v(tokens)
        a = (q @ k.transpose(1, 2) / d ** 0.5).softmax(-1) @ v
        tokens = tokens + layer.proj(a)
        if layer.ffn:
            tokens = layer.norm1(tokens)
            tokens = layer.norm2(tokens + layer.fc2(F.relu(layer.fc1(tokens))))
    z = tokens.reshape(n, c, nh * d)
    if head.out_proj is not None:
        z = head.out_proj(z)
    logits = 0
    for h in range(nh):
        w = head.weight[h]
        norm_w = head.weight[-1] if head.logit_norm == "last_head" else w
        logits = logits + (z[:, :, h * d:(h + 1) * d] * w / (norm_w.norm(dim=1, keepdim=True) + head.beta)).sum(-1)
    return logits


@pytest.mark.parametrize("heavy", [True, False])
@pytest.mark.parametrize("official", [False, True])
def test_matches_loop_reference(heavy, official):
    torch.manual_seed(0)
    opts = dict(logit_norm="last_head", token_layout="interleaved") if official else {}
    head = InterventionalClassifier(32, 5, num_heads=4, heavy=heavy, ffn_dim=16, **opts).eval()
    x = torch.randn(2, 32, 3, 4)
    with torch.no_grad():
        assert torch.allclose(head(x), loop_reference(head, x), atol=1e-5)


def test_shapes_and_parameters():
    head = InterventionalClassifier(32, 5, num_heads=4, heavy=True, ffn_dim=16)
    x = torch.randn(3, 32, 2, 2)
    assert head(x).shape == (3, 5)
    assert head(x, pre_logits=True).shape == (3, 5, 32)
    maps = head.attention_maps(x)
    assert maps.shape == (3, 4, 5, 2, 2)
    assert torch.allclose(maps.sum((-1, -2)), torch.ones(3, 4, 5))
    assert head.weight.shape == (4, 5, 8)
    assert len(head.layers) == 2 and head.out_proj is not None
    # the two layers start as copies of one another, as in the official code
    assert torch.equal(head.layers[0].q.weight, head.layers[1].q.weight)
    light = InterventionalClassifier(32, 5, num_heads=4, heavy=False)
    assert len(light.layers) == 1 and light.out_proj is None and not light.layers[0].ffn


def test_official_options_change_the_output():
    torch.manual_seed(1)
    paper = InterventionalClassifier(16, 3, num_heads=2, heavy=False).eval()
    official = InterventionalClassifier(16, 3, num_heads=2, heavy=False, logit_norm="last_head",
                                        token_layout="interleaved").eval()
    official.load_state_dict(paper.state_dict())
    x = torch.randn(2, 16, 2, 2)
    with torch.no_grad():
        assert not torch.allclose(paper(x), official(x))
    # one head: both behaviours coincide
    a = InterventionalClassifier(8, 3, num_heads=1, heavy=False).eval()
    b = InterventionalClassifier(8, 3, num_heads=1, heavy=False, logit_norm="last_head",
                                 token_layout="interleaved").eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert torch.allclose(a(x[:, :8]), b(x[:, :8]))


def test_backward_reaches_every_parameter():
    head = InterventionalClassifier(16, 3, num_heads=2, heavy=True, ffn_dim=8)
    head(torch.randn(2, 16, 2, 2)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_bad_arguments():
    with pytest.raises(UserError, match="num_heads=3 must divide"):
        InterventionalClassifier(32, 5, num_heads=3)
    with pytest.raises(UserError, match="logit_norm 'x'.*per_head, last_head"):
        InterventionalClassifier(32, 5, logit_norm="x")
    with pytest.raises(UserError, match="token_layout"):
        InterventionalClassifier(32, 5, token_layout="x")
    head = InterventionalClassifier(32, 5, num_heads=4)
    with pytest.raises(UserError, match=r"\(N, 32, H, W\)"):
        head(torch.randn(2, 16, 2, 2))
