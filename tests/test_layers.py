"""Attention layers against a direct float64 transcription of their definition.

The layers rotate queries, keys and values of several heads in one complex multiplication;
this checks that against the textbook form: each head rotated on its own with cos/sin.
"""

import math

import pytest
import torch

from poyo.model.attention import Layout
from poyo.model.layers import CrossAttention, SelfAttention, take_rows
from poyo.model.rotary import RotaryTime, periods


def rotate_ref(x, t, head_dim, sign=1.0):
    """x (N, H, D) float64; rotate pair (2i, 2i+1), i < D/4, by sign * 2 pi t / period_i."""
    out = x.clone()
    for i, period in enumerate(periods(head_dim // 4).tolist()):
        a = sign * 2 * math.pi * t / period
        c, s = torch.cos(a)[:, None], torch.sin(a)[:, None]
        x0, x1 = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i], out[..., 2 * i + 1] = x0 * c - x1 * s, x0 * s + x1 * c
    return out


def attention_ref(layer, x, context, tx, tc):
    """One sample, written out: project, rotate per head, softmax(q k^T / sqrt(D)) v, rotate back."""
    h, d = layer.heads, layer.dim_head
    w = {n: p.detach().double() for n, p in layer.named_parameters()}
    ln = lambda z, name: torch.nn.functional.layer_norm(z, (z.shape[-1],), w[f"{name}.weight"], w[f"{name}.bias"])  # noqa: E731
    if isinstance(layer, SelfAttention):
        q, k, v = (ln(x, "norm") @ w["to_qkv.weight"].T).chunk(3, dim=-1)
    else:
        q = ln(x, "norm") @ w["to_q.weight"].T
        k, v = (ln(context, "norm_context") @ w["to_kv.weight"].T).chunk(2, dim=-1)
    q, k, v = (z.unflatten(-1, (h, d)) for z in (q, k, v))
    q, k = rotate_ref(q, tx, d), rotate_ref(k, tc, d)
    if layer.rotate_value:
        v = rotate_ref(v, tc, d)
    att = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d), dim=-1)
    out = torch.einsum("hqk,khd->qhd", att, v)
    if layer.rotate_value:
        out = rotate_ref(out, tx, d, sign=-1.0)
    return out.flatten(-2) @ w["to_out.weight"].T + w["to_out.bias"]


@pytest.mark.parametrize("kind", ["self", "cross"])
@pytest.mark.parametrize("rotate_value", [True, False])
def test_layers_match_their_definition(kind, rotate_value):
    g = torch.Generator().manual_seed(0)
    dim, heads, d = 32, 3, 16
    rotary = RotaryTime(d)
    if kind == "self":
        layer = SelfAttention(dim, rotary, heads=heads, dim_head=d, rotate_value=rotate_value)
    else:
        layer = CrossAttention(dim, rotary, heads=heads, dim_head=d, rotate_value=rotate_value)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    layer.eval()
    n, m = 7, 11 if kind == "cross" else 7
    x, context = torch.randn(n, dim, generator=g), torch.randn(m, dim, generator=g)
    tx, tc = torch.rand(n, dtype=torch.float64, generator=g), torch.rand(m, dtype=torch.float64, generator=g)
    if kind == "self":
        context, tc = x, tx
    layout = lambda k: Layout.packed(torch.tensor([0, k], dtype=torch.int32), k, k)  # noqa: E731
    with torch.no_grad():
        if kind == "self":
            got = layer(x, rotary(tx), layout(n))
        else:
            got = layer(x, context, rotary(tx), rotary(tc), layout(n), layout(m))
    want = attention_ref(layer, x.double(), context.double(), tx, tc)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rotate_value", [True, False])
def test_cross_attention_over_distinct_rows_equals_the_gathered_context(rotate_value):
    """``context_index``: keys and values projected once per distinct row and gathered per token
    (what POYO does with its (unit, token type) pairs) give the outputs and gradients of the
    tokens' own context, time terms included; here 3 rows for 40 tokens."""
    g = torch.Generator().manual_seed(1)
    dim, heads, d = 32, 2, 16
    rotary = RotaryTime(d)
    layer = CrossAttention(dim, rotary, heads=heads, dim_head=d, rotate_value=rotate_value, time_prior=2.0)
    layer.eval()
    x = torch.randn(6, dim, generator=g)
    rows = torch.randn(3, dim, generator=g, requires_grad=True)
    index = torch.randint(0, 3, (40,), generator=g)
    tx, tc = torch.rand(6, dtype=torch.float64, generator=g), torch.rand(40, dtype=torch.float64, generator=g)
    q_layout = Layout.packed(torch.tensor([0, 2, 6], dtype=torch.int32), 4, 6)
    kv_layout = Layout.packed(torch.tensor([0, 25, 40], dtype=torch.int32), 25, 40)
    gathered = layer(x, rows[index], rotary(tx), rotary(tc), q_layout, kv_layout)
    (grad_gathered,) = torch.autograd.grad(gathered.square().sum(), rows)
    by_row = layer(x, rows, rotary(tx), rotary(tc), q_layout, kv_layout, index)
    (grad_by_row,) = torch.autograd.grad(by_row.square().sum(), rows)
    torch.testing.assert_close(by_row, gathered, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_by_row, grad_gathered, rtol=1e-4, atol=1e-5)
    assert gathered.abs().max() > 0.1 and grad_gathered.abs().max() > 0.1  # not trivially zero


def test_take_rows_is_fancy_indexing_with_an_index_add_backward():
    """``take_rows(src, index)`` equals ``src[index]`` for an index of any shape, repeats
    included, forward and backward (the repeated rows' gradients summed), and refuses a
    boolean or float index, which ``src[index]`` would read as a mask or reject later."""
    g = torch.Generator().manual_seed(3)
    src = torch.randn(5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 7, 3, 4, generator=g, dtype=torch.float64)
    index = torch.randint(0, 5, (2, 7), generator=g)
    assert len(index.unique()) < index.numel()  # some rows taken more than once
    got = take_rows(src, index)
    want = src[index]
    assert got.shape == (2, 7, 3, 4)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    (grad_got,) = torch.autograd.grad((got * weight).sum(), src)
    (grad_want,) = torch.autograd.grad((want * weight).sum(), src)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-12, atol=1e-12)
    assert grad_got.abs().max() > 0.1
    for bad in (index > 2, index.double()):
        with pytest.raises(TypeError, match="integer index"):
            take_rows(src, bad)
