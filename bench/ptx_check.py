"""Compile a model's generated kernels for a Hopper GPU on the CPU (Triton's CUDA backend makes PTX without a
device) and report each kernel's global load/store widths: a GPU-side check of codegen (does it compile, do its
accesses vectorize to 16 bytes) when no GPU is at hand. Groups are worked out as on CUDA (bench/gpu_groups.py).

    python bench/ptx_check.py --model llama      # tiny configs of gpu_groups.py (llama: head_dim 128)
    python bench/ptx_check.py --model gpt2 --arch 90
    python bench/ptx_check.py --model llama --pdl   # as TILECRAFT_PDL=1 rewrites them: each kernel's
        # griddepcontrol.wait must come before its first global load or store
Exits 1 when a kernel does not compile (or, with --pdl, when one touches memory before its wait).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DT = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32", "torch.int64": "i64",
      "torch.int32": "i32", "torch.bool": "i1", "torch.int8": "i8", "torch.uint8": "u8"}


def dump(model: str, out: str, pdl: bool = False) -> int:
    """Phase 1 (Triton interpreter: the model runs once on the CPU): the generated sources of its CUDA groups
    (with `pdl`, as programmatic dependent launch rewrites them: codegen/kernel.py `with_pdl`)."""
    import torch

    import tilecraft
    from gpu_groups import groups_on_cuda, tiny
    from tilecraft.codegen import build_kernel
    from tilecraft.codegen.kernel import with_pdl
    from tilecraft.ir import is_view

    torch.manual_seed(0)
    if model == "llama":  # head_dim 128 as in the benchmarked LLaMA-style model
        import transformers as T

        m, vocab = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=512, intermediate_size=512, num_hidden_layers=1,
                                                    num_attention_heads=4, num_key_value_heads=2,
                                                    vocab_size=128, use_cache=False)), 128
    else:
        m, vocab = tiny(model)
    m = m.to(torch.bfloat16).eval()
    c = tilecraft.compile(m, passes=[])
    with torch.no_grad():
        c(input_ids=torch.randint(0, vocab, (2, 64)))
    graph = c.report.graphs[0].graph
    groups = groups_on_cuda(graph)
    n = 0
    read = {id(v) for g in groups for x in g.nodes for v in x.input_values()}
    # the CUDA-marked copy's outputs: the values no group reads, stored by their group
    graph_outputs = [g.nodes[-1].outputs[0] for g in groups if id(g.nodes[-1].outputs[0]) not in read]
    for grp in groups:
        if grp.kind not in ("pointwise", "reduction"):
            continue
        ids = {id(x) for x in grp.nodes}
        outs = []
        readers = [v for other in groups if other is not grp for x in other.nodes for v in x.input_values()]
        for v in readers + graph_outputs:
            while is_view(v.producer) and id(v.producer) not in ids:
                v = v.producer.inputs[0]
            if v.producer is not None and id(v.producer) in ids and not any(v is o for o in outs):
                outs.append(v)
        if not outs:
            continue
        try:
            k, _ = build_kernel(grp, outs, "k")
        except Exception as e:  # noqa: BLE001 - the runtime would run this group through torch
            print(f"codegen skipped {' '.join(x.op for x in grp.nodes)[:60]}: {type(e).__name__}: {e}"[:200])
            continue
        with open(os.path.join(out, f"{n}.json"), "w") as f:
            json.dump({"src": (with_pdl(k.source, k.fn_name) if pdl else None) or k.source, "fn": k.fn_name,
                       "config": k.config,
                       "dtypes": [DT.get(str(a.dtype), "bf16") for a in k.args]}, f)
        n += 1
    return n


def compile_all(src_dir: str, arch: int, pdl: bool = False) -> list[dict]:
    """Phase 2 (no interpreter): each dumped kernel through Triton's CUDA backend, 16-byte aligned pointers (with
    `pdl`, checking the PDL-aware sources that phase 1 wrote: the wait before any global access)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    rows = []
    for f in sorted(os.listdir(src_dir), key=lambda x: int(x.split(".")[0])):
        k = json.load(open(os.path.join(src_dir, f)))
        path = os.path.join(src_dir, f"k{f[:-5]}.py")
        Path(path).write_text(k["src"])
        spec = importlib.util.spec_from_file_location(f"ptx_k{f[:-5]}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        fn = getattr(mod, k["fn"])
        ptrs = [a for a in fn.arg_names if a.endswith("_ptr")]
        sig = {a: ("*" + k["dtypes"][ptrs.index(a)]) if a in ptrs else "constexpr" for a in fn.arg_names}
        attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in ptrs}
        consts = {a: k["config"][a] for a in fn.arg_names if a in k["config"]}
        row = {"kernel": k["fn"], "config": {a: k["config"][a] for a in k["config"] if a != "BACKEND"}}
        try:
            ptx = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", arch, 32),
                                 options={"num_warps": k["config"].get("num_warps", 4)}).asm["ptx"]
            ins = [ln.strip().lstrip("@%p0123456789 ") for ln in ptx.splitlines()]
            row["loads"] = sorted({ln.split()[0] for ln in ins if ln.startswith("ld.global")})
            row["stores"] = sorted({ln.split()[0] for ln in ins if ln.startswith("st.global")})
            if pdl:
                wait = next((i for i, ln in enumerate(ins) if ln.startswith("griddepcontrol.wait")), None)
                mem = next((i for i, ln in enumerate(ins) if ln.startswith(("ld.global", "st.global", "atom.",
                                                                               "red.", "cp.async"))), None)
                if wait is None or (mem is not None and mem < wait):
                    row["error"] = "PDL: a global access before griddepcontrol.wait (or no wait)"
        except Exception as e:  # noqa: BLE001 - reported per kernel
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="llama", help="llama, gpt2, bert, neox, opt")
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability (90: Hopper)")
    ap.add_argument("--compile-dir", help=argparse.SUPPRESS)  # phase 2, in a process without the interpreter
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--pdl", action="store_true", help="compile the sources as TILECRAFT_PDL=1 rewrites them")
    a = ap.parse_args(argv)
    if a.compile_dir:
        rows = compile_all(a.compile_dir, a.arch, a.pdl)
        print(json.dumps(rows))
        return 0
    with tempfile.TemporaryDirectory() as d:
        os.environ["TRITON_INTERPRET"] = "1"
        n = dump(a.model, d, a.pdl)
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        proc = subprocess.run([sys.executable, __file__, "--compile-dir", d, "--arch", str(a.arch)]
                              + (["--pdl"] if a.pdl else []),
                              capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in rows:
        what = r.get("error") or f"loads {' '.join(r['loads']) or '-'}; stores {' '.join(r['stores']) or '-'}"
        print(f"{r['kernel'][:48]:48} {what}")
    print(f"{n} kernels, {sum('error' in r for r in rows)} failed to compile for sm_{a.arch}"
          + (" (PDL-aware sources: each waits before it touches memory)" if a.pdl else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
