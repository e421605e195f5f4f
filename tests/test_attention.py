"""Every attention backend computes what the padded SDPA reference computes.

Tolerances: fp32 backends match to atol 2e-5 / rtol 1e-4 (outputs and gradients);
``varlen`` (flash, bf16 only) is compared to the fp32 reference with atol 3e-2.
CUDA-only backends run when a GPU is present and are skipped with the reason otherwise.
"""

import pytest
import torch

from poyo.model.attention import PACKED_BACKENDS, Layout, attend, available, resolve

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_batch(q_lens, k_lens, heads=3, dim=16, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(q_lens), heads, dim, generator=g).to(device)
    k = torch.randn(sum(k_lens), heads, dim, generator=g).to(device)
    v = torch.randn(sum(k_lens), heads, dim, generator=g).to(device)
    return q, k, v


def packed_layout(lens, device="cpu"):
    cu = torch.tensor([0] + lens, device=device).cumsum(0).to(torch.int32)
    return Layout.packed(cu, max(lens), sum(lens))


def to_padded(x, lens, fill=0.0):
    out = x.new_full((len(lens), max(lens), *x.shape[1:]), fill)
    mask = torch.zeros(len(lens), max(lens), dtype=torch.bool, device=x.device)
    start = 0
    for i, n in enumerate(lens):
        out[i, :n], mask[i, :n] = x[start : start + n], True
        start += n
    return out, mask


def from_padded(x, mask):
    return x[mask]


def reference(q, k, v, q_lens, k_lens, fill=0.0):
    """The padded SDPA path on padded copies, returned in packed order."""
    qp, qm = to_padded(q, q_lens, fill)
    kp, km = to_padded(k, k_lens, fill)
    vp, _ = to_padded(v, k_lens, fill)
    out = attend(qp, kp, vp, Layout.padded(qm), Layout.padded(km), backend="sdpa")
    return from_padded(out, qm)


CASES = {
    "cross, ragged keys": ([128, 128, 128], [37, 5, 300]),
    "ragged queries and keys, one empty query set": ([20, 0, 7], [40, 9, 3]),
    "uniform self-attention shape": ([16, 16], [16, 16]),
    "windows of two lengths (half_windows' latents), grouped": ([16, 8, 16, 8, 8], [16, 8, 16, 8, 8]),
    "shared query counts over ragged keys": ([12, 12, 0, 12], [30, 30, 4, 7]),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", PACKED_BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("cpu_kernel", ["math", "sdpa"])
def test_packed_backends_match_padded_reference(backend, case, device, cpu_kernel, monkeypatch):
    """The reference is PyTorch's own SDPA; on CPU the backends run poyo's training kernel
    (``math``, the default) or PyTorch's SDPA (``POYO_CPU_ATTENTION=sdpa``)."""
    why = available(backend, torch.device(device))
    if why:
        pytest.skip(why)
    if device != "cpu" and cpu_kernel != "math":
        pytest.skip("the switch only acts on CPU")
    q_lens, k_lens = CASES[case]
    dtype = torch.bfloat16 if backend == "varlen" else torch.float32
    tol = dict(atol=3e-2, rtol=3e-2) if dtype == torch.bfloat16 else dict(atol=2e-5, rtol=1e-4)
    q, k, v = make_batch(q_lens, k_lens, device=device)

    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    with monkeypatch.context() as m:
        m.setenv("POYO_CPU_ATTENTION", "sdpa")
        ref = reference(*leaves, q_lens, k_lens)
    grad_out = torch.randn_like(ref)
    ref.backward(grad_out)
    monkeypatch.setenv("POYO_CPU_ATTENTION", cpu_kernel)

    mine = [t.clone().to(dtype).requires_grad_() for t in (q, k, v)]
    out = attend(*mine, packed_layout(q_lens, device), packed_layout(k_lens, device), backend=backend)
    out.backward(grad_out.to(dtype))
    torch.testing.assert_close(out.float(), ref.detach(), **tol)
    for a, b in zip(mine, leaves):
        torch.testing.assert_close(a.grad.float(), b.grad, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_padding_never_leaks_into_padded_attention(device):
    q_lens, k_lens = [5, 3], [4, 9]
    q, k, v = make_batch(q_lens, k_lens, device=device)
    clean = reference(q, k, v, q_lens, k_lens, fill=0.0)
    junk = reference(q, k, v, q_lens, k_lens, fill=1e4)  # huge keys/values in the padded slots
    torch.testing.assert_close(junk, clean, rtol=0, atol=0)


def test_automatic_choice_and_clear_errors():
    q = torch.zeros(4, 1, 8)
    packed, padded = packed_layout([2, 2]), Layout.padded(torch.ones(2, 2, dtype=torch.bool))
    assert resolve("auto", padded, q, 0.0) == "sdpa"
    assert resolve("auto", packed, q, 0.2) == "loop"  # CPU
    with pytest.raises(ValueError, match="'sdpa' cannot run a packed batch"):
        resolve("sdpa", packed, q, 0.0)
    with pytest.raises(ValueError, match="'loop' cannot run a padded batch"):
        resolve("loop", padded, q, 0.0)
    with pytest.raises(RuntimeError, match="runs on CUDA only"):
        resolve("varlen", packed, q, 0.0)
    with pytest.raises(ValueError, match="unknown attention backend 'flash3'"):
        resolve("flash3", packed, q, 0.0)
    with pytest.raises(ValueError, match="share a layout"):
        attend(q, q, q, packed, padded)


def test_dropout_is_applied_in_every_cpu_backend():
    q_lens, k_lens = [8, 8], [30, 12]
    q, k, v = make_batch(q_lens, k_lens)
    for backend in ("loop", "nested"):
        torch.manual_seed(0)
        a = attend(q, k, v, packed_layout(q_lens), packed_layout(k_lens), dropout_p=0.5, backend=backend)
        b = attend(q, k, v, packed_layout(q_lens), packed_layout(k_lens), dropout_p=0.0, backend=backend)
        assert not torch.allclose(a, b)


def test_xformers_plumbing_with_a_stand_in_kernel(monkeypatch):
    """Our call into xformers (BMHK shapes, block-diagonal seqlens, samples without queries)
    checked on CPU against a dense stand-in with xformers' documented semantics. The real
    kernel is compared in test_packed_backends_match_padded_reference when a GPU is lent."""
    import sys
    import types

    from poyo.model import attention

    class BlockDiagonalMask:
        def __init__(self, q, k):
            self.q, self.k = q, k

        @classmethod
        def from_seqlens(cls, q_seqlen, kv_seqlen):
            assert all(n > 0 for n in q_seqlen), "stand-in mirrors the strictest kernel: no empty query blocks"
            return cls(list(q_seqlen), list(kv_seqlen))

    def memory_efficient_attention(q, k, v, attn_bias, p=0.0):
        assert q.dim() == 4 and q.shape[0] == 1  # BMHK with all samples in one row
        bias = torch.full((q.shape[1], k.shape[1]), float("-inf"))
        qs, ks = 0, 0
        for nq, nk in zip(attn_bias.q, attn_bias.k):
            bias[qs : qs + nq, ks : ks + nk] = 0
            qs, ks = qs + nq, ks + nk
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias
        )
        return out.transpose(1, 2)

    ops = types.ModuleType("xformers.ops")
    ops.fmha = types.SimpleNamespace(BlockDiagonalMask=BlockDiagonalMask)
    ops.memory_efficient_attention = memory_efficient_attention
    monkeypatch.setitem(sys.modules, "xformers", types.ModuleType("xformers"))
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    for case in CASES.values():
        q_lens, k_lens = case
        q, k, v = make_batch(q_lens, k_lens)
        out = attention._KERNELS["xformers"](q, k, v, packed_layout(q_lens), packed_layout(k_lens), 0.0)
        torch.testing.assert_close(out, reference(q, k, v, q_lens, k_lens), atol=2e-5, rtol=1e-4)


def test_shapes_that_do_not_fit_the_layout_are_refused():
    q, k, v = make_batch([3, 4], [5, 6])
    with pytest.raises(ValueError, match=r"k has shape \(11, 3, 16\); its layout needs \(12, 'heads', 'head_dim'\)"):
        attend(q, k, v, packed_layout([3, 4]), packed_layout([6, 6]))


def test_bucketed_shapes_change_nothing_but_the_shapes():
    """In bf16 on CPU the packed kernel rounds each sample's query and key counts up
    (:func:`bucket`, so oneDNN reuses its compiled kernels): padded queries are dropped and padded keys
    masked, so outputs and gradients are those of the exact shapes (checked in fp32, exactly)."""
    from poyo.model.attention import _bucketed_math, math_attention

    torch.manual_seed(0)
    for nq, nk in [(5, 70), (64, 64), (100, 1), (1, 129), (3, 2100)]:
        q, k, v = (torch.randn(n, 2, 8, requires_grad=True) for n in (nq, nk, nk))
        g = torch.randn(nq, 2, 8)
        exact = math_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)).transpose(0, 1)
        bucketed = _bucketed_math(q, k, v, 0.0)
        torch.testing.assert_close(bucketed, exact, rtol=1e-6, atol=1e-6)
        for a, b in zip(torch.autograd.grad(bucketed, (q, k, v), g), torch.autograd.grad(exact, (q, k, v), g)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("q_lens, k_lens", [([128, 128, 128], [37, 5, 300]), ([128, 64, 64, 128], [128, 64, 64, 128])])
def test_packed_bf16_training_on_cpu_matches_the_padded_reference(q_lens, k_lens):
    q, k, v = make_batch(q_lens, k_lens, dim=16)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = reference(*leaves, q_lens, k_lens)
    g = torch.randn_like(ref)
    ref.backward(g)
    mine = [t.clone().bfloat16().requires_grad_() for t in (q, k, v)]
    out = attend(*mine, packed_layout(q_lens), packed_layout(k_lens), backend="loop")
    out.backward(g.bfloat16())
    torch.testing.assert_close(out.float(), ref.detach(), atol=3e-2, rtol=3e-2)
    for a, b in zip(mine, leaves):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=3e-2, rtol=3e-2)
