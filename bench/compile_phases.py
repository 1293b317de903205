"""Where tilecraft's compile time goes, phase by phase, for the models of bench/compile_time.py.

    python bench/compile_phases.py --model gpt2                    # GPU: the real config, bf16, its batch
    TRITON_INTERPRET=1 python bench/compile_phases.py --model gpt2 --cpu --batch 1x8   # CPU, real config
    python bench/compile_phases.py --model llama --cpu --dry-run   # tiny config

Compiles the model twice in this process (`torch._dynamo.reset()` between): the first compile is cold (as
the process's first), the second is warm (kernel modules imported, Triton's in-memory and on-disk caches full).
Phases are timed by wrapping tilecraft's own functions (nothing in the library changes): Dynamo + AOT capture
(what the backend does not account for), IR import, each pass, verify and the pass trace, fusion (partition),
codegen, config selection (schedule DB), loading kernel modules, Triton compile/warmup, the program's first
run. With --profile, the second compile's cProfile top functions are printed too.
"""
from __future__ import annotations

import argparse
import cProfile
import collections
import functools
import io
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TIMES: collections.Counter = collections.Counter()
COUNTS: collections.Counter = collections.Counter()
_stack: list[str] = []


def timed(owner, attr: str, phase: str):
    """Replace owner.attr with a wrapper adding its wall time (exclusive of nested timed phases) to phase."""
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        _stack.append(phase)
        try:
            return fn(*a, **kw)
        finally:
            _stack.pop()
            dt = time.perf_counter() - t0
            TIMES[phase] += dt
            COUNTS[phase] += 1
            if _stack:  # exclusive times: the caller's phase loses what this one took
                TIMES[_stack[-1]] -= dt

    setattr(owner, attr, wrapper)


def instrument():
    import tilecraft.codegen as codegen
    import tilecraft.codegen.compile as ccompile
    import tilecraft.codegen.kernel as kernel
    import tilecraft.compiler.api as api
    import tilecraft.compiler.runtime as runtime
    import tilecraft.passes as passes
    import tilecraft.passes.manager as manager

    import torch._dynamo.backends.common as dynamo_common

    timed(dynamo_common, "aot_module_simplified", "AOT autograd (trace, decompose)")
    timed(api, "compile_graph", "backend (other)")
    timed(api, "import_fx", "IR import")
    timed(manager, "verify", "verify")
    timed(manager.PassTrace, "record", "pass trace (format_graph)")
    timed(api, "build_program", "program (other)")
    timed(runtime, "partition", "fusion (partition)")
    timed(codegen, "build_kernel", "codegen")
    timed(runtime.KernelProgram, "_choose_config", "config select (schedule DB)")
    timed(kernel, "load_source", "load kernel module")
    timed(ccompile, "compile_kernels", "triton compile/warmup")
    timed(runtime.KernelProgram, "__call__", "program run (first call)")
    # each pass of the default pipeline, by name
    orig = passes.default_passes

    def default_passes(options=None):
        out = []
        for name, fn in orig(options):
            holder = type("P", (), {"fn": staticmethod(fn)})
            timed(holder, "fn", f"pass {name}")
            out.append((name, holder.fn))
        return out

    api.default_passes = default_passes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt2")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (fp32), Triton interpreter")
    p.add_argument("--dry-run", action="store_true", help="tiny configs (implies --cpu)")
    p.add_argument("--batch", default=None, help="BxT, default compile_time.py's (2x8 on the CPU)")
    p.add_argument("--profile", action="store_true", help="cProfile the second compile")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--skip-kernels", action="store_true",
                   help="load each kernel's module but launch nothing (CPU: the interpreter would take minutes on "
                        "real configs; outputs are zeros, phases are timed as usual)")
    args = p.parse_args()
    cpu = args.cpu or args.dry_run
    if cpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    t_import = time.perf_counter()
    import torch

    import tilecraft
    from compile_time import MODELS, build

    t_import = time.perf_counter() - t_import
    instrument()
    if args.skip_kernels:
        from tilecraft.codegen.kernel import Kernel

        def launch(self, tensors, config=None):
            self.fn  # noqa: B018 - import the module as a launch would
            for i in self.out_positions:
                tensors[i].zero_()

        Kernel.launch = launch
    device, dtype = ("cpu", torch.float32) if cpu else ("cuda", torch.bfloat16)
    torch.manual_seed(0)
    with torch.device(device):
        model, vocab = build(args.model, args.dry_run)
        model = model.to(dtype).eval()
    b, t = map(int, args.batch.split("x")) if args.batch else ((2, 8) if cpu else MODELS[args.model])
    ids = torch.randint(0, vocab, (b, t), device=device)
    kw = {} if args.model == "bert" else {"use_cache": False}
    print(f"{args.model} {b}x{t} {dtype} on {device}; imports {t_import:.2f}s")
    with torch.no_grad():
        expected = model(input_ids=ids, **kw)[0]
    results, correct = [], []
    for run in range(args.runs):
        TIMES.clear()
        COUNTS.clear()
        torch._dynamo.reset()
        prof = cProfile.Profile() if args.profile and run == args.runs - 1 else None
        t0 = time.perf_counter()
        compiled = tilecraft.compile(model)
        if prof:
            prof.enable()
        with torch.no_grad():
            got = compiled(input_ids=ids, **kw)[0]
        if device == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
        if prof:
            prof.disable()
        if not args.skip_kernels:
            from tilecraft.testing import assert_close

            try:
                assert_close(got, expected, scale=1.0 if dtype == torch.float32 else 3.0)
                correct.append(True)
            except AssertionError:
                correct.append(False)
        phases = dict(TIMES)
        phases["Dynamo (trace, guards; rest)"] = total - sum(TIMES.values())
        kernels = [k for g in compiled.report.graphs for k in g.kernels]
        results.append((total, phases, dict(COUNTS), len(kernels), len({k.source for k in kernels})))
        if prof:
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(45)
            print(s.getvalue())
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
            print(s.getvalue())
    names = list(dict.fromkeys(n for r in results for n in r[1]))
    print(f"{'phase':<32}" + "".join(f"{'run ' + str(i + 1) + ' s':>12}" for i in range(len(results))) + "   calls")
    for n in sorted(names, key=lambda n: -results[-1][1].get(n, 0)):
        print(f"{n:<32}" + "".join(f"{r[1].get(n, 0):>12.3f}" for r in results) + f"   {results[-1][2].get(n, '')}")
    print(f"{'TOTAL (compile + first call)':<32}" + "".join(f"{r[0]:>12.3f}" for r in results))
    print(f"kernels {results[-1][3]}, distinct sources {results[-1][4]}, matches eager: "
          f"{'not checked (--skip-kernels)' if args.skip_kernels else 'yes' if all(correct) else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
