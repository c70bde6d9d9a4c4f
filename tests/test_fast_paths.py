"""The fast CPU paths compute what the plain formulas compute (forward and gradients).

* fused experts: ``gdfn_mixture`` = ``Σ_j w_j · GDFN_j(x)`` with the experts run one by one;
* channels-last features: attention (MDTA), the CEA assembly and whole models give the
  same outputs as on contiguous (NCHW) features;
* the state-dict layout of the models is unchanged, so older checkpoints load.
"""

import subprocess
import sys

import pytest
import torch

from expertir.models import build_model
from expertir.models.blocks import GDFN, MDTA, BlockSite
from expertir.models.experts import MixtureOfExpertsFFN, gdfn_mixture
from expertir.models.hyper_adapter import assemble_tokenwise

CL = torch.channels_last


def _grads(params):
    return [p.grad.clone() for p in params]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_fused_experts_equal_the_weighted_sum_of_experts_run_one_by_one(bias, layout):
    torch.manual_seed(0)
    experts = [GDFN(12, 1.33, bias) for _ in range(3)]
    if bias:  # non-zero biases, so that their blending is checked too
        for e in experts:
            for conv in (e.project_in, e.dwconv, e.project_out):
                torch.nn.init.normal_(conv.bias)
    params = [p for e in experts for p in e.parameters()]
    x = torch.randn(2, 12, 10, 9).contiguous(memory_format=layout).requires_grad_()
    weights = torch.rand(2, 3, 10, 9).softmax(1)
    weights[1, 2] = 0.0  # an expert unused on one image
    probe = torch.randn(2, 12, 10, 9)

    want = sum(weights[:, j:j + 1] * e(x) for j, e in enumerate(experts))
    (want * probe).sum().backward()
    want_grads, want_x = _grads(params), x.grad.clone()
    for p in params:
        p.grad = None
    x.grad = None

    got = gdfn_mixture(experts, x, weights)
    (got * probe).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, want_x, rtol=1e-5, atol=1e-5)
    for g, w in zip(_grads(params), want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_sparse_expert_compute_runs_each_image_on_its_own_experts_and_agrees_with_dense():
    from expertir.models.blocks import ForwardContext

    torch.manual_seed(1)
    site = BlockSite("encoder", 1, 0, 16, 1)
    sparse = MixtureOfExpertsFFN(site, embed_dim=8, num_experts=4, top_k=1, compute="sparse")
    dense = MixtureOfExpertsFFN(site, embed_dim=8, num_experts=4, top_k=1, compute="dense")
    with torch.no_grad():  # expert j's key is axis j: an embedding on axis j routes to expert j
        sparse.router.keys.copy_(torch.eye(4, 8))
    dense.load_state_dict(sparse.state_dict())
    emb = torch.zeros(3, 8, 2, 2)
    emb[0, 2] = emb[1, 0] = emb[2, 2] = 1.0  # images 0 and 2 -> expert 2, image 1 -> expert 0
    x = torch.randn(3, 16, 32, 32)
    ctx = ForwardContext(cond={"routing_embedding": emb})
    out_sparse, out_dense = sparse(x, ctx), dense(x, ctx)
    torch.testing.assert_close(out_sparse, out_dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_sparse[[0, 2]], sparse.experts[2](x[[0, 2]]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_sparse[1:2], sparse.experts[0](x[1:2]), rtol=1e-5, atol=1e-6)


def test_attention_and_assembly_give_the_same_result_on_channels_last_features():
    torch.manual_seed(2)
    attn = MDTA(16, num_heads=2)
    x = torch.randn(2, 16, 12, 10)
    torch.testing.assert_close(attn(x.contiguous(memory_format=CL)), attn(x), rtol=1e-5, atol=1e-6)
    bases, directions = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    for got, want in zip(assemble_tokenwise(x.contiguous(memory_format=CL), bases, directions),
                         assemble_tokenwise(x, bases, directions)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["restormer_tiny", "sler_ir_tiny", "cea_tiny"])
def test_models_keep_their_state_dict_layout_and_agree_across_memory_layouts(name):
    torch.manual_seed(3)
    model = build_model(name)
    if name == "cea_tiny":  # gamma starts at 0: make the assembly branches count
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                torch.nn.init.normal_(p, std=0.1)
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # GDFN experts and blocks keep their own convolutions (checkpoints load as before).
    assert all(k.endswith(("project_in.weight", "dwconv.weight", "project_out.weight"))
               for k in keys if ".ffn." in k and "router" not in k)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = model(x)
        b = model(x.contiguous(memory_format=CL))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_command_line_sets_passive_openmp_threads_before_torch_loads():
    code = ("import os, sys; import expertir.cli.main; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert out.stdout.split() == ["ACTIVE", "False"]  # the user's choice is kept
    out = subprocess.run([sys.executable, "-c", code + "; import torch; torch.ones(2).sum()"],
                         capture_output=True, text=True, check=True, env={**env, "OMP_WAIT_POLICY": ""})
    assert out.stdout.split() == ["None", "False"]  # empty: libgomp's own default, without its warning
    assert "OMP_WAIT_POLICY" not in out.stderr
