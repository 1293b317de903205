"""How a model's graphs would be fused on a GPU, worked out on the CPU: capture with the passes off, mark every
value as living on CUDA, run the default pass pipeline and the fusion partitioner, and print each group (its
template and ops) with the bytes its arguments move. The device-dependent passes (SDPA fusion, the cuBLAS-side
residual rules) then take their GPU decisions; nothing is compiled or run on the graph marked CUDA.

    python bench/gpu_groups.py --model gpt2          # tiny configs of bench/compile_time.py's families
    python bench/gpu_groups.py --model neox --dtype bfloat16
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def tiny(name: str):
    """(model, vocab): a tiny config of the family (2 layers), random weights."""
    import transformers as tf

    if name == "neox":
        cfg = tf.GPTNeoXConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2,
                               rotary_pct=0.25, vocab_size=100, max_position_embeddings=64)
        return tf.GPTNeoXForCausalLM(cfg), 100
    if name == "opt":
        cfg = tf.OPTConfig(hidden_size=64, num_attention_heads=4, ffn_dim=128, num_hidden_layers=2, vocab_size=100,
                           max_position_embeddings=64, word_embed_proj_dim=64)
        return tf.OPTForCausalLM(cfg), 100
    from compile_time import build  # gpt2, llama, bert (dry-run sizes)

    return build(name, dry=True)


def groups_on_cuda(graph):
    """The fusion groups of `graph` (captured before any pass) with every value marked as on CUDA."""
    from tilecraft.ir import TensorType
    from tilecraft.passes import default_passes, run_passes
    from tilecraft.passes.fusion import partition

    g = copy.deepcopy(graph)
    for v in g.values():
        t = v.type
        if isinstance(t, TensorType):
            v.type = TensorType(t.shape, t.dtype, t.strides, "cuda")
    return partition(run_passes(g, default_passes(), None, check=False))


def nbytes(values) -> int:
    return sum(v.type.numel * v.type.dtype.itemsize for v in values)


def main(argv=None) -> int:
    import tilecraft

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gpt2", help="gpt2, llama, bert, neox, opt")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--shape", default="2x8", help="batch x tokens")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model, vocab = tiny(args.model)
    model = model.to(getattr(torch, args.dtype)).eval()
    b, t = (int(v) for v in args.shape.split("x"))
    ids = torch.randint(0, vocab, (b, t))
    c = tilecraft.compile(model, passes=[])
    with torch.no_grad():
        c(input_ids=ids, **({} if args.model == "bert" else {"use_cache": False}))
    for i, rec in enumerate(c.report.graphs):
        print(f"graph {i}")
        for grp in groups_on_cuda(rec.graph):
            ins = {id(v): v for n in grp.nodes for v in n.input_values()}
            made = {id(o) for n in grp.nodes for o in n.outputs}
            reads = [v for k, v in ins.items() if k not in made]
            print(f"  {grp.kind:<10} {' '.join(n.op for n in grp.nodes)[:90]:<90} reads {nbytes(reads):>8} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
