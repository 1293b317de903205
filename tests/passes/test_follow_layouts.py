"""follow_input_layouts: a pointwise result takes the permuted layout of its first full-shape operand, as eager's
TensorIterator does (RoPE on a transposed q stays [b, t, h, d] in memory), and results stay the same."""
import torch
import transformers as T

import tilecraft
from tilecraft.passes import default_passes, follow_input_layouts, fuse_attention
from tilecraft.testing import assert_close

CPU = {"fuse_attention": lambda g: fuse_attention(g, ("cpu",)),
       "follow_input_layouts": lambda g: follow_input_layouts(g, ("cpu",))}
PASSES = [(n, CPU.get(n, f)) for n, f in default_passes()]


def test_rope_keeps_the_transposed_layout_and_matches_eager():
    torch.manual_seed(0)
    m = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                         use_cache=False)).eval()
    ids = torch.randint(0, 100, (2, 16))
    for backend in ("triton", "aten"):
        torch._dynamo.reset()
        c = tilecraft.compile(m, passes=PASSES, matmul=backend)
        with torch.no_grad():
            assert_close(c(input_ids=ids)[0], m(input_ids=ids)[0], msg=backend)
            ids2 = torch.randint(0, 100, (2, 16))
            assert_close(c(input_ids=ids2)[0], m(input_ids=ids2)[0], msg=backend)
        g = c.report.graphs[0].graph
        sdpa = [n for n in g.nodes if n.op == "sdpa"]
        assert len(sdpa) == 2
        q = sdpa[0].inputs[0].type  # RoPE's result: [b, h, t, d] laid out as [b, t, h, d]
        assert q.shape == (2, 4, 16, 16) and q.strides == (1024, 16, 64, 1), q
        assert not c.report.graphs[0].program.copies  # no kernel input needed a layout copy
