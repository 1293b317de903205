"""merge_sibling_qlinears: quantized linears that read the same activation (q/k/v, gate/up) run as ONE quantized
GEMM over their row-concatenated weights, then slices of its output; tilecraft.quantize lays sibling layers out
as row blocks of one tensor, so the merged weight is a view of the layers' own buffers (no second copy).
Checked against the quantized model run eagerly (the custom ops' dequantize-then-matmul)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilecraft
from tilecraft.ir import Graph, TensorType
from tilecraft.passes import merge_sibling_qlinears
from tilecraft.quant import QuantizedLinear
from tilecraft.quant.formats import quantize_weight
from tilecraft.testing import assert_close


class Siblings(nn.Module):
    """Attention-like q/k/v on x, and a SwiGLU MLP (gate/up on a second activation h): two sibling groups."""

    def __init__(self, d=64, bias=False):
        super().__init__()
        self.attn = nn.Module()
        self.attn.q, self.attn.k, self.attn.v = nn.Linear(d, 48, bias), nn.Linear(d, 16, bias), nn.Linear(d, 16, bias)
        self.mlp = nn.Module()
        self.mlp.gate, self.mlp.up, self.mlp.down = nn.Linear(d, 96, bias), nn.Linear(d, 96, bias), nn.Linear(96, d)

    def forward(self, x):
        a = self.attn
        q, k, v = a.q(x), a.k(x), a.v(x)
        h = x + torch.cat([q * 2, torch.sigmoid(k) * v], dim=-1)
        m = self.mlp
        return h + m.down(F.silu(m.gate(h)) * m.up(h))


def _qlinears(c):
    return [n for n in c.report.graphs[0].graph.nodes if n.op.startswith("wq_linear")]


def _compile_and_check(model, scheme, make_input, **kw):
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize=scheme)
    with torch.no_grad():
        for seed in (1, 2):  # fresh inputs: the cached merged weights serve the second call too
            x = make_input(torch.Generator().manual_seed(seed))
            got, ref = c(x, **kw), c.model(x, **kw)
            got, ref = (got.logits, ref.logits) if hasattr(got, "logits") else (got, ref)
            assert_close(got, ref)
    prog = c.report.graphs[0].program
    assert not prog.fell_back and not any(op.startswith("wq_linear") for op in prog.torch_ops())
    return c, prog


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:32"])
def test_siblings_merge_into_one_qmatmul_each_and_match_eager(scheme):
    torch.manual_seed(0)
    c, prog = _compile_and_check(Siblings(), scheme, lambda g: torch.randn(2, 3, 64, generator=g))
    assert len(_qlinears(c)) == 3  # q/k/v, gate/up, down
    assert sorted(n.inputs[1].type.shape[0] for n in _qlinears(c)) == [64, 80, 192]  # weight rows
    # gate/up, equal in size, are a `pair` node (an output each); SwiGLU's silu(gate) * up is its kernel's epilogue
    pair = next(n for n in _qlinears(c) if n.attrs.get("pair"))
    assert [o.type.shape for o in pair.outputs] == [(2, 3, 96)] * 2
    gate_up = next(k for k in c.report.graphs[0].kernels
                   if k.info.get("ops", [""])[0].startswith("wq_linear") and "sigmoid" in k.info["ops"])
    assert gate_up.extra["PAIR"] and "acc_a" in gate_up.source and "acc_b" in gate_up.source
    assert not any(op in ("mul", "sigmoid", "silu", "slice") for op in prog.torch_ops())


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:32"])
def test_merged_weights_are_views_of_the_layers_buffers(scheme):
    torch.manual_seed(0)
    c, prog = _compile_and_check(Siblings(bias=True), scheme, lambda g: torch.randn(5, 64, generator=g))
    cats = [n for n in prog.graph.nodes if n.op == "cat" and n.attrs.get("views")]
    assert len(cats) == (3 if scheme == "int8_weight_only" else 4) * 2  # qweight, scales, (zeros), bias
    a, m = c.model.attn, c.model.mlp
    firsts = {getattr(layer, buf).data_ptr() for layer in (a.q, m.gate) for buf in ("qweight", "scales", "zeros", "bias")
              if getattr(layer, buf) is not None}
    # the runtime's cached static results: each merged tensor starts at its first sibling's buffer, no copy
    merged = [prog._cache[id(n.out)] for n in cats]
    assert {t.data_ptr() for t in merged} == firsts
    for n, t in zip(cats, merged):
        assert tuple(t.shape) == n.out.type.shape and t.is_contiguous()


def test_user_built_layers_not_adjacent_are_copied_and_still_correct():
    """QuantizedLinears built one by one (not through tilecraft.quantize): the merged weight is a copy."""
    torch.manual_seed(0)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = (QuantizedLinear(quantize_weight(torch.randn(n, 64), "int8_weight_only"))
                              for n in (32, 48))

        def forward(self, x):
            return self.a(x) + self.b(x)[:, :32]

    m = M()
    torch._dynamo.reset()
    c = tilecraft.compile(m)
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert_close(c(x), m(x))
    prog = c.report.graphs[0].program
    assert len(_qlinears(c)) == 1
    cat = next(n for n in prog.graph.nodes if n.op == "cat" and n.attrs.get("dim") == 0)
    assert prog._cache[id(cat.out)].data_ptr() not in (m.a.qweight.data_ptr(), m.b.qweight.data_ptr())


def _graph_of(specs, x_shape=(4, 64)):
    """A graph of wq_linear_int8 nodes on one activation: specs = [(N, K, has_bias)], weights as inputs."""
    g = Graph()
    x = g.add_input(TensorType(x_shape, torch.float32), "x")
    outs = []
    for i, (n, k, bias) in enumerate(specs):
        q = g.add_input(TensorType((n, k), torch.int8), f"q{i}")
        s = g.add_input(TensorType((n,), torch.float32), f"s{i}")
        b = g.add_input(TensorType((n,), torch.float32), f"b{i}") if bias else None
        xi = x if k == x_shape[-1] else g.add_input(TensorType((x_shape[0], k), torch.float32), f"x{i}")
        outs.append(g.add("relu", [g.add("wq_linear_int8", [xi, q, s, b]).out]).out)
    g.outputs = outs
    return g


def test_siblings_that_differ_are_not_merged():
    # bias on one, not on the other: two groups of one (nothing merged)
    g = merge_sibling_qlinears(_graph_of([(32, 64, True), (16, 64, False)]))
    assert [n.op for n in g.nodes if n.op != "relu"] == ["wq_linear_int8"] * 2
    # a different K reads another activation: not a sibling
    g = merge_sibling_qlinears(_graph_of([(32, 64, False), (16, 32, False)]))
    assert [n.op for n in g.nodes if n.op != "relu"] == ["wq_linear_int8"] * 2
    # same bias presence and K: merged, and the pair with bias merges separately from the one without
    g = merge_sibling_qlinears(_graph_of([(32, 64, True), (16, 64, False), (8, 64, True), (4, 64, False)]))
    assert sum(n.op == "wq_linear_int8" for n in g.nodes) == 2
    assert sorted(n.out.type.shape[-1] for n in g.nodes if n.op == "wq_linear_int8") == [20, 40]


def test_merged_graph_computes_what_the_siblings_did():
    """The rewritten graph, interpreted, against the original graph on the same tensors."""
    from tilecraft.ir import interpret

    specs = [(32, 64, True), (16, 64, True), (8, 64, True)]
    g = _graph_of(specs)
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(4, 64, generator=gen)]
    for n, k, _ in specs:
        qw = quantize_weight(torch.randn(n, k, generator=gen), "int8_weight_only")
        args += [qw.qweight, qw.scales, torch.randn(n, generator=gen)]
    want = interpret(g, args)
    merged = merge_sibling_qlinears(g)
    assert sum(n.op == "wq_linear_int8" for n in merged.nodes) == 1
    for a, b in zip(interpret(merged, args), want):
        assert_close(a, b)


transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_llama_int8_merged_matches_eager(dtype):
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(dtype).eval()
    c, prog = _compile_and_check(model, "int8_weight_only",
                                 lambda g: torch.randint(0, 128, (1, 16), generator=g), use_cache=False)
    # per layer: qkv, o, gate/up, down; plus lm_head
    assert len(_qlinears(c)) == 2 * 4 + 1
    attn = c.model.model.layers[0].self_attn
    cats = [n for n in prog.graph.nodes if n.op == "cat" and n.attrs.get("views")]
    assert attn.q_proj.qweight.data_ptr() in {prog._cache[id(n.out)].data_ptr() for n in cats}


def test_linears_whose_outputs_are_graph_outputs_are_not_merged():
    """A merged output's slices are strided views: graph outputs keep eager's contiguous layout instead."""
    g = _graph_of([(32, 64, False), (16, 64, False), (8, 64, False)])
    first = g.outputs[0].producer
    g.nodes.remove(first)
    g.outputs[0] = first.inputs[0]  # the first linear's own output is returned
    g = merge_sibling_qlinears(g)
    assert sorted(n.out.type.shape[-1] for n in g.nodes if n.op == "wq_linear_int8") == [24, 32]


def test_quantized_model_for_the_user_keeps_one_tensor_per_buffer(tmp_path):
    """tilecraft.quantize / quantize_ hand the model to the user: each layer's buffers are tensors of their own
    (safetensors refuses shared storage, so save_pretrained would fail), while compile(quantize=...) lays its
    private copy's siblings out as row blocks of one tensor (the merge's views); both compute the same."""
    safetensors = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    m = Siblings(bias=True)
    q = tilecraft.quantize(m, "int8_weight_only")
    storages = [b.untyped_storage().data_ptr() for b in q.buffers()]
    assert len(storages) == len(set(storages))
    safetensors.save_file(dict(q.state_dict()),
                          str(tmp_path / "q.safetensors"))
    c, _ = _compile_and_check(m, "int8_weight_only", lambda g: torch.randn(5, 64, generator=g))
    a = c.model.attn
    assert a.k.qweight.data_ptr() == a.q.qweight.data_ptr() + a.q.qweight.nbytes  # row blocks of one tensor
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert_close(c(x), q(x))


@pytest.mark.parametrize("rows,pair", [(4, True), (1, False), (256, False)])
def test_two_equal_siblings_are_a_pair_at_decode_sizes(rows, pair):
    """Two siblings of equal size become one `pair` node with an output per sibling where the Triton GEMM runs
    (2 <= M < codegen's "aten" threshold), else slices of one output; either way the graph computes the same."""
    from tilecraft.ir import interpret, verify

    g = _graph_of([(32, 64, True), (32, 64, True)], x_shape=(rows, 64))
    gen = torch.Generator().manual_seed(1)
    args = [torch.randn(rows, 64, generator=gen)]
    for _ in range(2):
        qw = quantize_weight(torch.randn(32, 64, generator=gen), "int8_weight_only")
        args += [qw.qweight, qw.scales, torch.randn(32, generator=gen)]
    want = interpret(g, args)
    merged = merge_sibling_qlinears(g)
    verify(merged)
    (node,) = [n for n in merged.nodes if n.op == "wq_linear_int8"]
    assert bool(node.attrs.get("pair")) == pair and len(node.outputs) == (2 if pair else 1)
    assert any(n.op == "slice" for n in merged.nodes) != pair
    for a, b in zip(interpret(merged, args), want):
        assert_close(a, b)
