"""Weight-only quantized GEMM: tl.dot on tiles whose weight operand is dequantized in registers on load.
int8: dot(x, q) then the per-channel scale. int4: dot(x, (q - z) * s) with the group scales on the weight tile
(SCALE_W; a chunk may then span several groups), or dot(x, q - z) (exact small integers) scaled per chunk in
float32 (BLOCK_K <= GROUP). Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), SPLIT_K); M blocks of one N block are
adjacent (weight reuse in L2).

int4 loads: the [N, K/2] byte layout read as int32 words [N, K/8]: nibble i (bits 4i..4i+3) of word w holds
k = 8w + i (byte j's low nibble is k = 2j, its high one k = 2j + 1). One 16-byte load per thread brings 32
weights; `_unpack8` puts the 8 nibbles of each word side by side in K order with three rounds of tl.join (no
data leaves its thread), so the activations stay one contiguous [BLOCK_M, BLOCK_K] load and each chunk is ONE
tl.dot over the full BLOCK_K. Codes become floats by bit tricks (`_u4f`, `_i8f`), not int-to-float
conversions (quarter-rate instructions on the GPU).

TRANS (a knob): compute out^T = W x^T, the dequantized weight tile the LEFT operand (it can feed the tensor
cores from registers; no round trip through shared memory) and the thin activation tile the right one. For
small M the weight tile is then the big MMA dimension (BLOCK_N >= 64) and BLOCK_M = 16 the small one. For
large M (compute-bound) this is Hopper's wgmma with its A operand in registers ("RS"): the weight tile goes
global -> shared memory by the pipeline's async copies, shared -> registers straight in wgmma's operand layout,
is dequantized there, and the activation tile (BLOCK_M up to 256, wgmma's N) is read from shared memory.
int4 with TRANS, BLOCK_M >= 128 and BLOCK_K <= GROUP loads the [BLOCK_N, BLOCK_K / 2] bytes and interleaves
their low and high nibbles with ONE tl.join (byte j holds k = 2j, 2j + 1: the K pairs of wgmma's operand
layout), so Triton keeps the whole dequantization in that layout; the word unpack's three joins would need a
shared memory round trip of the bf16 tile before each wgmma. With bf16 activations (on a GPU) the codes become
bf16 bit patterns 0x4300 | q = 128 + q, and w = (q - z) * s is two packed bf16x2 operations per pair of weights
(q - z exact; s rounded to bf16, then the product: twice rounded, about 1.1x the error of the float32 path on a
GEMM's output). Loads read rows clamped into the matrix, unmasked (only the stores are masked), so the pipelined
loop carries no per-element predicates. On sm_90 a 256x128x64 chunk is then ~240 SASS instructions per warp for
int8 and int4, about half the wgmma's time to issue on 8 warps (bench/qgemm_ptx.py shows what sm_90 runs).
Timed on an H200 at M=2048 (bench/quant_linear.py --large-m): 1.24-1.46x cuBLAS bf16 for int8, 1.55-1.74x for
int4, behind dequantize + cuBLAS (1.13-1.18x), which stays the compiled default from M=256.

With the group scale on the dot's result (SCALE_W off, the word path) and 16-bit activations, the codes become
16-bit floats BASE + q two at a time (`_unpack8_half`: a word masked with 0x000F000F keeps nibbles i and i + 4
in its halves; OR-ing BASE's exponent bits makes them floats), minus BASE + z in packed 16-bit arithmetic: the
decode (M <= 16) default. Triton then keeps the dequantized tile in the mma operand layout; the zero point's
one-byte load per chunk is still read before the dequantize (its latency is exposed once per chunk: loading it a
chunk ahead sends the tile through shared memory instead, checked in PTX). Applying it after the dot instead,
dot(x, BASE + q) - (BASE + z) * sum(x), was timed on an H200 (bench/q4_decode_sweep.py, 2026-12-03): 15-20%
slower at M=16 (the per-chunk sum of x costs warp shuffles and a shared memory trip), so it is not a knob.
Wide decode weights (N >= ~8K) are instruction-bound, not latency-bound: ~5 SASS instructions per weight on
sm_90 (bench/qgemm_ptx.py), hence TRANS on 2 warps there (more programs per SM to hide the ALU latency).

ASM (int4 decode path, GPU only): the codes become q - z in inline PTX, one register per pair of K neighbours
(`bits.py: unpack8_pairs_asm`: per word one shift, then per pair a PRMT of byte i of w and of w >> 4, a LOP3 that
masks the two codes and ORs in BASE's exponent bits, and a packed bf16x2/f16x2 subtract of BASE + z), so Triton
has no 16-bit halves to extract and re-pair: on sm_90, 16x32x128 TRANS on 2 warps, 298 -> 224 SASS instructions
per K chunk (bench/qgemm_ptx.py); on an H200 each LLaMA-492M decode GEMM is 5-17% faster: the int4 decode
default (M <= 16).

PREFETCH (set with programmatic dependent launch, TILECRAFT_PDL): before its grid-dependency wait each program
asks L2 for its weight lines, which stream in while the previous kernel still runs.

PAIR (codegen's kernel of a `pair` node, passes/quantize.py: two sibling linears of equal size, as gate/up, over
their row-concatenated weight): a program's BLOCK_N weight rows are n, then N/2 + n, for BLOCK_N/2 output columns n,
so after the reduction acc_a and acc_b hold both halves' results at the same columns and an epilogue that combines
them (SwiGLU's silu(gate) * up) fuses; the grid is unchanged.

ROPE = D/2 > 0 (codegen's kernel of a quantized linear with a `rope` attribute, passes/quantize.py fuse_rope_qlinear:
the q/k/v GEMM whose q and k columns RoPE rotates): a tile's columns i and i + BLOCK_N/2 are columns c and c + D/2
of a D-wide head (offs_n, the weight rows too; BLOCK_N <= D), so the epilogue holds each pair the rotation mixes
and stores both in place; the grid is unchanged. Measured on an H200 (2048x3072 int4, M=16, every config of
bench/q4_decode_sweep.py --flags): pairs side by side (rows c, c + D/2, c + 1, ...) cost 1.3-3 us over the plain
tile, runs with per-element index math (// and % on every column) 0.6-2 us: the main loops compile to the same
code, the cost is the prologue's index arithmetic in a kernel this short. Hence both PAIR and ROPE place two runs
of BLOCK_N/2 rows from per-program scalars plus one arange.

SPLIT_K > 1 reduces serially inside the kernel (no memset or cast kernels): each split stores its fp32 partial
tile into `ws_ptr`, bumps the tile's counter in `cnt_ptr`, and the split that arrives last sums the partials,
resets the counter and runs the epilogue. So a fused epilogue still sees whole sums."""
import triton
import triton.language as tl

from tilecraft.quant.triton.bits import (i8f as _i8f, u4f as _u4f, unpack8 as _unpack8, unpack8_half as _unpack8_half,
                                        unpack8_pairs_asm as _unpack8_pairs_asm)
from tilecraft.quant.triton.tiles import gemm_tile, prefetch_rows_l2, split_k_range


@triton.jit
def wq_gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_om, ws_ptr, cnt_ptr,
                   BITS: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr,
                   IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   SPLIT_K: tl.constexpr, SCALE_W: tl.constexpr, TRANS: tl.constexpr, PREFETCH: tl.constexpr = False,
                   ASM: tl.constexpr = False, PAIR: tl.constexpr = False, ROPE: tl.constexpr = 0):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    if PAIR:  # output columns offs_n of both halves: weight rows offs_n, then N/2 + offs_n, in two runs
        offs_m, offs_n, m_ok, n_ok = gemm_tile(pid, M, N // 2, BLOCK_M, BLOCK_N // 2)
        # (index arithmetic per program plus one arange: per-element index math, or a join's layout, costs a decode
        # GEMM's prologue ~0.5-2 us on an H200, see ROPE below)
        j = tl.arange(0, BLOCK_N)
        rows = (pid // tl.cdiv(M, BLOCK_M)) * (BLOCK_N // 2) + j + tl.where(j < BLOCK_N // 2, 0, N // 2 - BLOCK_N // 2)
    else:
        offs_m, offs_n, m_ok, n_ok = gemm_tile(pid, M, N, BLOCK_M, BLOCK_N)
        if ROPE > 0:  # tile columns i, i + BLOCK_N/2: columns c, c + ROPE of a 2 * ROPE-wide head (BLOCK_N <= 2 ROPE)
            p0 = (pid // tl.cdiv(M, BLOCK_M)) * (BLOCK_N // 2)  # the tile's first pair
            j = tl.arange(0, BLOCK_N)
            offs_n = (p0 // ROPE) * (2 * ROPE) + p0 % ROPE + j + tl.where(j < BLOCK_N // 2, 0, ROPE - BLOCK_N // 2)
            offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N // 2), BLOCK_N // 2)
            n_ok = offs_n < N
        rows = offs_n
    k_start, k_end = split_k_range(pid_k, K, BLOCK_K, SPLIT_K)
    # loads read clamped rows without masks (a ragged tile re-reads the last row; only the stores are masked): no
    # per-element predicates in the pipelined loop (sm_90, 256x128x64 int8: 291 -> 244 SASS instructions a chunk)
    rm = tl.minimum(offs_m, M - 1)
    rn = tl.minimum(rows, N - 1)
    if PREFETCH:  # (with PDL this runs while the previous kernel still does: weights only, nothing it writes)
        prefetch_rows_l2(w_ptr, rn, K * BITS // 8, k_start * BITS // 8, k_end * BITS // 8)
    # PDL_WAIT
    if SPLIT_K == 1:  # (K >= 1) the K loop runs at least once: without this, the empty-loop path's zeroed
        tl.assume(k_end > k_start)  # accumulator makes ptxas serialize every wgmma (warning C7515)
    # (codegen's fused decode kernels issue their epilogue's independent loads here, so the main loop hides them)
    # PROLOGUE LOADS
    if DOT_F32:
        dt = tl.float32
    else:
        dt = x_ptr.dtype.element_ty
    PREC: tl.constexpr = "ieee" if IEEE else "tf32"  # (tf32 only matters for float32 operands)
    if TRANS:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if BITS == 8:
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_end
            x = tl.load(x_ptr + rm[:, None] * stride_xm + offs_k[None, :], mask=k_ok[None, :], other=0.0).to(dt)
            if TRANS:  # [BLOCK_N, BLOCK_K] weight rows as stored, the left operand
                w = _i8f(tl.load(w_ptr + rn[:, None] * K + offs_k[None, :], mask=k_ok[None, :], other=0)).to(dt)
                acc = tl.dot(w, tl.trans(x), acc, input_precision=PREC)
            else:
                w = _i8f(tl.load(w_ptr + rn[None, :] * K + offs_k[:, None], mask=k_ok[:, None], other=0)).to(dt)
                acc = tl.dot(x, w, acc, input_precision=PREC)
        scale = tl.load(s_ptr + rn).to(tl.float32)
        if TRANS:
            acc = acc * scale[:, None]
        else:
            acc = acc * scale[None, :]
    else:
        WORDS: tl.constexpr = BLOCK_K // 8
        NGROUPS = K // GROUP
        NG: tl.constexpr = BLOCK_K // GROUP if BLOCK_K > GROUP else 1  # groups per chunk (> 1 needs SCALE_W)
        BYTES: tl.constexpr = TRANS and NG == 1 and BLOCK_M >= 128  # (see the module doc)
        # dequantize in bf16x2 arithmetic (module doc); not in the interpreter (DOT_F32: its bf16 arithmetic is wrong)
        BF16: tl.constexpr = BYTES and not DOT_F32 and x_ptr.dtype.element_ty == tl.bfloat16
        w32 = w_ptr.to(tl.pointer_type(tl.int32))
        # words per weight row: GROUP (>= 32) divides K, so rows start 16-byte aligned (16-byte loads)
        KW = tl.multiple_of(K // 8, GROUP // 8) if GROUP >= 32 else K // 8
        for k0 in range(k_start, k_end, BLOCK_K):  # BLOCK_K divides K (checked): no ragged chunk
            offs_k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rm[:, None] * stride_xm + offs_k[None, :]).to(dt)
            if BYTES:  # [BLOCK_N, BLOCK_K / 2] bytes; (low, high) nibble pairs are K order
                offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
                b = tl.load(w_ptr + rn[:, None] * (KW * 4) + offs_b[None, :])
                if BF16:  # codes as the bf16 bit patterns 0x4300 | q = 128 + q
                    q = tl.reshape(tl.join((b & 15).to(tl.int16) | 0x4300, (b >> 4).to(tl.int16) | 0x4300),
                                   (BLOCK_N, BLOCK_K)).to(tl.bfloat16, bitcast=True)
                else:
                    q = tl.reshape(tl.join(b & 15, b >> 4), (BLOCK_N, BLOCK_K)).to(tl.int32)
            else:
                offs_w = k0 // 8 + tl.arange(0, WORDS)
                words = tl.load(w32 + rn[:, None] * KW + offs_w[None, :])
            if NG > 1:  # several groups per chunk (never BYTES): each value's group scale and zero, [BLOCK_N, NG]
                gs = k0 // GROUP + tl.arange(0, NG)
                sg = tl.load(s_ptr + rn[:, None] * NGROUPS + gs[None, :])
                zg = tl.load(z_ptr + rn[:, None] * NGROUPS + gs[None, :])
                sb = tl.reshape(tl.broadcast_to(sg.to(tl.float32)[:, :, None], (BLOCK_N, NG, GROUP)),
                                (BLOCK_N, BLOCK_K))
                zb = tl.reshape(tl.broadcast_to(zg.to(tl.float32)[:, :, None], (BLOCK_N, NG, GROUP)),
                                (BLOCK_N, BLOCK_K))
                w = ((_u4f(_unpack8(words, BLOCK_N, WORDS)) - zb) * sb).to(dt)
                if TRANS:
                    acc = tl.dot(w, tl.trans(x), acc, input_precision=PREC)
                else:
                    acc = tl.dot(x, tl.trans(w), acc, input_precision=PREC)
            else:  # the chunk lies inside one group
                g = k0 // GROUP
                s = tl.load(s_ptr + rn * NGROUPS + g).to(tl.float32)
                # (one byte per row, too small for an async copy: read each chunk, an L1 hit after the first;
                # loading it a chunk ahead would pin the dequantized tile to a layout that needs a shared
                # memory round trip before the wgmma)
                zq = tl.load(z_ptr + rn * NGROUPS + g)
                z = zq.to(tl.float32)
                if BF16:  # q - z exactly (bf16 128 + q minus 128 + z)
                    qz = q - (z + 128.0).to(tl.bfloat16)[:, None]
                elif BYTES:
                    qz = _u4f(q) - z[:, None]
                if SCALE_W:  # w = (q - z) * s rounded once to the dot dtype; the dot accumulates in place
                    if BF16:  # one bf16x2 multiply per pair (rounded twice: s to bf16, then w)
                        w = (qz * s.to(tl.bfloat16)[:, None]).to(dt)
                    elif BYTES:
                        w = (qz * s[:, None]).to(dt)
                    else:
                        w = ((_u4f(_unpack8(words, BLOCK_N, WORDS)) - z[:, None]) * s[:, None]).to(dt)
                    if TRANS:
                        acc = tl.dot(w, tl.trans(x), acc, input_precision=PREC)
                    else:
                        acc = tl.dot(x, tl.trans(w), acc, input_precision=PREC)
                else:  # exact small integers -15..15 in the dot dtype; the group scale goes on the dot's result
                    xdt: tl.constexpr = x_ptr.dtype.element_ty
                    if BYTES:
                        w = qz.to(dt)
                    elif xdt == tl.float32:
                        w = (_u4f(_unpack8(words, BLOCK_N, WORDS)) - z[:, None]).to(dt)
                    else:  # 16-bit floats BASE + q straight from the bits, minus BASE + z (exact)
                        BASE: tl.constexpr = 128.0 if xdt == tl.bfloat16 else 1024.0
                        if ASM:  # (GPU only) q - z in packed 16-bit PTX, pairs of K neighbours per register
                            zi = zq.to(tl.int32)
                            MAGIC: tl.constexpr = 0x43004300 if xdt == tl.bfloat16 else 0x64006400
                            w = _unpack8_pairs_asm(words, zi | (zi << 16) | MAGIC, BLOCK_N, WORDS, xdt)
                        elif DOT_F32:  # (bfloat16 in the interpreter, whose bfloat16 arithmetic is wrong)
                            w = _unpack8_half(words, BLOCK_N, WORDS, xdt).to(tl.float32) - (z + BASE)[:, None]
                        else:
                            w = _unpack8_half(words, BLOCK_N, WORDS, xdt) - (z + BASE).to(xdt)[:, None]
                    if TRANS:
                        acc += tl.dot(w, tl.trans(x), input_precision=PREC) * s[:, None]
                    else:
                        acc += tl.dot(x, tl.trans(w), input_precision=PREC) * s[None, :]
    # (codegen's other fused kernels issue them here, before the split-K round trips: fewer live registers)
    # EARLY LOADS
    if TRANS:
        acc = tl.trans(acc)
    if SPLIT_K > 1:  # serial split-K reduction (see the module doc); only the last split stores
        tiles = tl.num_programs(0)
        offs_t = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        tl.store(ws_ptr + (pid_k * tiles + pid) * (BLOCK_M * BLOCK_N) + offs_t, acc)
        tl.debug_barrier()
        count = tl.atomic_add(cnt_ptr + pid, 1, sem="acq_rel")
        last = count == SPLIT_K - 1
        every = offs_t >= 0
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for j in range(SPLIT_K):
            acc += tl.load(ws_ptr + (j * tiles + pid) * (BLOCK_M * BLOCK_N) + offs_t, mask=every & last, other=0.0,
                           cache_modifier=".cg")
        tl.store(cnt_ptr + pid, 0, mask=last)  # ready for the next launch
        m_ok = m_ok & last
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn).to(tl.float32)[None, :]
    if PAIR:  # the halves' results at columns offs_n: acc_a = x @ W[:N/2].T, acc_b = x @ W[N/2:].T
        acc_a, acc_b = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
    # EPILOGUE (codegen's qmatmul template replaces the rest with its fused ops and their stores)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
