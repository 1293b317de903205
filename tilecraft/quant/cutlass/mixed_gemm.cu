// CUTLASS 3.x Hopper (sm_90a) mixed-input GEMM for tilecraft's quantized Linear layers (prefill).
//
//   out[M, N] (bf16, row-major) = x[M, K] (bf16, row-major) @ dequant(W)[N, K]^T
//
// Recipe: CUTLASS example 55_hopper_mixed_dtype_gemm. The narrow (quantized) operand must go through the
// register file, so the problem is swapped and transposed explicitly: D^T[N, M] = W[N, K] . x^T, which keeps
// the TMA epilogue usable; D^T column-major is exactly out[M, N] row-major.
//
// Layouts this file expects (built by tilecraft/quant/cutlass/__init__.py from tilecraft's formats):
//   int4: wq   = signed int4 (two's complement), two per byte, the even element of a pair in the low nibble,
//                stored in CUTLASS's "reordered" layout (compute_memory_reordering_atom<bf16> with the
//                [0,2,4,6,1,3,5,7] value shuffle, tiled over [N, K] column-major-of-atoms);
//         scales = bf16 [K/group, N] (N fastest), zeros = bf16 [K/group, N];
//         w[n, k] = q[n, k] * scales[k/group, n] + zeros[k/group, n]   (ConvertAndScaleWithZero).
//   int8: wq   = int8 [N, K] row-major (tilecraft's layout as is), scales = bf16 [N];
//         w[n, k] = q[n, k] * scales[n]   (ConvertAndScale with group = K).
// Compile-time configuration (tilecraft/quant/cutlass/__init__.py's VARIANTS builds several from this file); all
// sizes are in the swapped problem: M = weight rows (our N), N = activation rows (our M).
//   TC_TILE_M, TC_TILE_N, TC_TILE_K   the CTA tile (default 128 x 128 x 64)
//   TC_CLUSTER_M, TC_CLUSTER_N        the cluster shape (default 1 x 1)
//   TC_SCHEDULE                       TC_COOPERATIVE (default) or TC_PINGPONG (needs TC_TILE_M = 64 per warpgroup)
//   TC_INT8_EPILOGUE_SCALE            1: int8 converted exactly in the mainloop, scale[n] applied in the epilogue
//   TC_WITH_INT4, TC_WITH_INT8        0 leaves that scheme's kernel out (its entry point returns 3002)
// Entry points return 0 on success, 1000 + cutlass::Status on a CUTLASS failure (can_implement included),
// 2000 + cudaError_t on a CUDA error, 3000 on bad arguments, 3001 when too little workspace was passed and 3002
// when this build has no kernel for the scheme.

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#define TC_COOPERATIVE 1
#define TC_PINGPONG 2
#ifndef TC_TILE_M
#define TC_TILE_M 128
#endif
#ifndef TC_TILE_N
#define TC_TILE_N 128
#endif
#ifndef TC_TILE_K
#define TC_TILE_K 64
#endif
#ifndef TC_CLUSTER_M
#define TC_CLUSTER_M 1
#endif
#ifndef TC_CLUSTER_N
#define TC_CLUSTER_N 1
#endif
#ifndef TC_SCHEDULE
#define TC_SCHEDULE TC_COOPERATIVE
#endif
#ifndef TC_INT8_EPILOGUE_SCALE
#define TC_INT8_EPILOGUE_SCALE 0
#endif
#ifndef TC_WITH_INT4
#define TC_WITH_INT4 1
#endif
#ifndef TC_WITH_INT8
#define TC_WITH_INT8 1
#endif

#include "cutlass/cutlass.h"

#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cute/arch/mma_sm90.hpp"
#include "cutlass/util/packed_stride.hpp"

using namespace cute;

namespace {

constexpr int kErrCutlass = 1000;
constexpr int kErrCuda = 2000;
constexpr int kErrArgs = 3000;
constexpr int kErrWorkspace = 3001;
constexpr int kErrScheme = 3002;

#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)

using MmaType = cutlass::bfloat16_t;

// Activations x: bf16 [M, K] row-major. In the swapped problem they are operand B (K-major, "column-major").
using ElementX = MmaType;
using LayoutX = cutlass::layout::RowMajor;
constexpr int AlignX = 128 / sizeof_bits<ElementX>::value;
using StrideX = cutlass::detail::TagToStrideA_t<LayoutX>;  // (M, K, L) with K contiguous

// Weight W: [N, K] K-major; operand A of the swapped problem.
using LayoutW = cutlass::layout::ColumnMajor;  // as "B" of the unswapped problem: [K, N] column-major == [N, K]
using LayoutW_T = typename cutlass::layout::LayoutTranspose<LayoutW>::type;
using LayoutX_T = typename cutlass::layout::LayoutTranspose<LayoutX>::type;
using StrideW = cutlass::detail::TagToStrideB_t<LayoutW>;  // (N, K, L) with K contiguous

// Output: bf16 D^T[N, M] column-major == out[M, N] row-major; C (the optional residual) likewise.
using ElementD = cutlass::bfloat16_t;
using ElementC = cutlass::bfloat16_t;
using LayoutD_T = cutlass::layout::ColumnMajor;
constexpr int AlignD = 128 / sizeof_bits<ElementD>::value;

// Copy of cutlass::compute_memory_reordering_atom (tools/util/include/cutlass/util/mixed_dtype_utils.hpp, which
// also pulls in curand through its test helpers): the (m, k) -> offset layout of one 16 x 16 atom that places all
// values a thread reads for one SM90 RS wgmma contiguously, with `val_layout` permuting them within the thread.
template <class ElementMma, class AtomLayout = Layout<_1>, class ValLayout = Layout<_1>>
constexpr auto memory_reordering_atom(AtomLayout atom_layout = {}, ValLayout val_layout = {}) {
  using MmaAtom = decltype(SM90::GMMA::rs_op_selector<ElementMma, ElementMma, float, Shape<_64, _16, _32>>());
  using MmaTraits = MMA_Traits<MmaAtom>;
  auto mk_shape_mma = select<0, 2>(typename MmaTraits::Shape_MNK{});
  auto tv_layout_mma = typename MmaTraits::ALayout{};
  static_assert(size<1>(tv_layout_mma) % size(val_layout) == 0, "value layout must divide the MMA value layout");
  auto tv_tiler_warp = make_shape(Int<32>{}, size<1>(tv_layout_mma));
  auto mk_shape_warp = shape_div(mk_shape_mma, size(typename MmaTraits::ThrID{}) / Int<32>{});
  auto tv_layout_mma_warp = make_layout_like(composition(tv_layout_mma, tv_tiler_warp));
  auto mk_layout_mma_warp = right_inverse(tv_layout_mma_warp).with_shape(mk_shape_warp);
  auto mk_layout_mma_trgt = blocked_product(mk_layout_mma_warp, atom_layout);
  auto val_to_offset = logical_product(val_layout, size<1>(tv_layout_mma) / size(val_layout) * size(atom_layout));
  auto thr_to_offset = make_layout(size<0>(tv_layout_mma_warp));
  auto tv_to_offset = select<1, 0>(logical_product(val_to_offset, thr_to_offset));
  return composition(tv_to_offset, mk_layout_mma_trgt);
}

// The int4 weight's reordered ("shuffled") layout
using ValueShuffle = Layout<Shape<_2, _4>, Stride<_4, _1>>;  // values [0,2,4,6,1,3,5,7] for fast int4 -> bf16
using LayoutAtomInt4 = decltype(memory_reordering_atom<MmaType, Layout<Shape<_1, _1>>, ValueShuffle>());

// The int4 weight layout the kernel reads: (n, k, 0) -> element offset (tests print it against the Python repack).
inline auto int4_weight_layout(int N, int K) {
  return cute::tile_to_shape(LayoutAtomInt4{}, cute::make_shape(N, K, 1));
}

#if !defined(TC_MIXED_GEMM_LAYOUT_ONLY)  // (a layout-only build stops here: no kernels, no entry points)
using ElementScale = MmaType;
using ElementZero = MmaType;
using ElementAcc = float;

using TileShape = Shape<Int<TC_TILE_M>, Int<TC_TILE_N>, Int<TC_TILE_K>>;
using ClusterShape = Shape<Int<TC_CLUSTER_M>, Int<TC_CLUSTER_N>, _1>;
#if TC_SCHEDULE == TC_PINGPONG
using KernelSchedule = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using EpilogueSchedule = cutlass::epilogue::TmaWarpSpecialized;
#else
using KernelSchedule = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using EpilogueSchedule = cutlass::epilogue::TmaWarpSpecializedCooperative;
#endif

// D = alpha * acc + beta * C (C: the optional residual, same layout as D; beta = 0 leaves it unread) ...
using FusionPlain = cutlass::epilogue::fusion::LinearCombination<ElementD, ElementAcc, ElementC, ElementAcc>;
// ... or D = scale[row] * acc + beta * C, a per-weight-row scale (the swapped D's rows) applied in the epilogue.
using FusionRowScale = cutlass::epilogue::fusion::PerRowLinCombPerRowBiasEltAct<
    cutlass::epilogue::thread::Identity, ElementD, ElementAcc, ElementD, ElementC, ElementScale>;

template <class Fusion>
using EpilogueOf = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, ElementAcc,
    ElementC, LayoutD_T, AlignD, ElementD, LayoutD_T, AlignD, EpilogueSchedule, Fusion>::CollectiveOp;

template <class ElementWTuple, class LayoutWArg, int AlignW, class Epilogue>
using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
    ElementWTuple, LayoutWArg, AlignW,
    ElementX, LayoutX_T, AlignX,
    ElementAcc, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
    KernelSchedule>::CollectiveOp;

template <class ElementWTuple, class LayoutWArg, int AlignW, class Fusion = FusionPlain>
using GemmOf = cutlass::gemm::device::GemmUniversalAdapter<cutlass::gemm::kernel::GemmUniversal<
    Shape<int, int, int, int>, Mainloop<ElementWTuple, LayoutWArg, AlignW, EpilogueOf<Fusion>>, EpilogueOf<Fusion>>>;

// ---- int4 x bf16, scale + zero per group, reordered weight
using QuantInt4 = cutlass::int4b_t;
constexpr int AlignInt4 = 128 / sizeof_bits<QuantInt4>::value;
using LayoutInt4Reordered = decltype(cute::tile_to_shape(LayoutAtomInt4{}, Layout<Shape<int, int, int>, StrideW>{}));
#if TC_WITH_INT4
using GemmInt4 = GemmOf<cute::tuple<QuantInt4, ElementScale, ElementZero>, LayoutInt4Reordered, AlignInt4>;
#endif

// ---- int8 x bf16, one scale per output row: in the mainloop (group = K) or, exactly converted, in the epilogue
using QuantInt8 = int8_t;
constexpr int AlignInt8 = 128 / sizeof_bits<QuantInt8>::value;
#if TC_WITH_INT8 && TC_INT8_EPILOGUE_SCALE
using GemmInt8 = GemmOf<QuantInt8, LayoutW_T, AlignInt8, FusionRowScale>;
#elif TC_WITH_INT8
using GemmInt8 = GemmOf<cute::tuple<QuantInt8, ElementScale>, LayoutW_T, AlignInt8>;
#endif

template <class Gemm>
using StrideScaleOf = typename Gemm::GemmKernel::CollectiveMainloop::StrideScale;

// The current device and its SM count (cached: the persistent tile scheduler sizes its grid by it).
cutlass::KernelHardwareInfo hw_info() {
  static int sm_counts[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = 0;
  cutlass::KernelHardwareInfo info;
  info.device_id = dev;
  if (dev >= 64) {
    info.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(dev);
    return info;
  }
  if (sm_counts[dev] == 0) sm_counts[dev] = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(dev);
  info.sm_count = sm_counts[dev];
  return info;
}

// D = out; C = residual with beta = 1, or (no residual) C = out with beta = 0, which the epilogue never reads.
template <class Gemm>
void epilogue_args_into(typename Gemm::Arguments& args, void* out, const void* residual, int M, int N) {
  using StrideD = typename Gemm::GemmKernel::StrideD;
  using StrideC = typename Gemm::GemmKernel::StrideC;
  using Scalar = decltype(args.epilogue.thread.beta);  // float, or bf16 for the per-row-scale fusion
  args.epilogue.thread.alpha = Scalar(1.0f);
  args.epilogue.thread.beta = Scalar(residual ? 1.0f : 0.0f);
  args.epilogue.ptr_C = static_cast<const ElementC*>(residual ? residual : out);
  args.epilogue.dC = cutlass::make_cute_packed_stride(StrideC{}, cute::make_shape(N, M, 1));
  args.epilogue.ptr_D = static_cast<ElementD*>(out);
  args.epilogue.dD = cutlass::make_cute_packed_stride(StrideD{}, cute::make_shape(N, M, 1));
}

template <class Gemm>
typename Gemm::Arguments base_args(const void* x, int M, int N, int K) {
  typename Gemm::Arguments args{};
  args.hw_info = hw_info();
  args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
  args.problem_shape = {N, M, K, 1};  // swapped
  args.mainloop.ptr_B = static_cast<const ElementX*>(x);
  args.mainloop.dB = cutlass::make_cute_packed_stride(StrideX{}, cute::make_shape(M, K, 1));
  return args;
}

#if TC_WITH_INT4
typename GemmInt4::Arguments int4_args(const void* x, const void* wq, const void* scales, const void* zeros,
                                       void* out, const void* residual, int M, int N, int K, int group) {
  auto args = base_args<GemmInt4>(x, M, N, K);
  int scale_k = group > 0 ? (K + group - 1) / group : 0;
  args.mainloop.ptr_A = static_cast<const QuantInt4*>(wq);
  args.mainloop.dA = int4_weight_layout(N, K);
  args.mainloop.ptr_S = static_cast<const ElementScale*>(scales);
  args.mainloop.dS = cutlass::make_cute_packed_stride(StrideScaleOf<GemmInt4>{}, cute::make_shape(N, scale_k, 1));
  args.mainloop.group_size = group;
  args.mainloop.ptr_Z = static_cast<const ElementZero*>(zeros);
  epilogue_args_into<GemmInt4>(args, out, residual, M, N);
  return args;
}
#endif

#if TC_WITH_INT8
typename GemmInt8::Arguments int8_args(const void* x, const void* wq, const void* scales, void* out,
                                       const void* residual, int M, int N, int K) {
  auto args = base_args<GemmInt8>(x, M, N, K);
  args.mainloop.ptr_A = static_cast<const QuantInt8*>(wq);
  args.mainloop.dA = cutlass::make_cute_packed_stride(StrideW{}, cute::make_shape(N, K, 1));
  epilogue_args_into<GemmInt8>(args, out, residual, M, N);
#if TC_INT8_EPILOGUE_SCALE
  args.epilogue.thread.alpha_ptr = static_cast<const ElementScale*>(scales);  // a vector along D^T's rows (N)
#else
  args.mainloop.ptr_S = static_cast<const ElementScale*>(scales);
  args.mainloop.dS = cutlass::make_cute_packed_stride(StrideScaleOf<GemmInt8>{}, cute::make_shape(N, 1, 1));
  args.mainloop.group_size = K;  // one group spanning K: a per-row scale
#endif
  return args;
}
#endif

template <class Gemm>
int run_gemm(typename Gemm::Arguments const& args, void* stream, void* workspace, size_t workspace_bytes) {
  Gemm gemm;
  cutlass::Status st = gemm.can_implement(args);
  if (st != cutlass::Status::kSuccess) return kErrCutlass + static_cast<int>(st);
  if (Gemm::get_workspace_size(args) > workspace_bytes) return kErrWorkspace;
  st = gemm.run(args, workspace, static_cast<cudaStream_t>(stream));
  if (st != cutlass::Status::kSuccess) return kErrCutlass + static_cast<int>(st);
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? 0 : kErrCuda + static_cast<int>(err);
}

bool bad_shape(int M, int N, int K) { return M <= 0 || N <= 0 || K <= 0; }

#endif  // !TC_MIXED_GEMM_LAYOUT_ONLY
#endif  // CUTLASS_ARCH_MMA_SM90_SUPPORTED

}  // namespace

#if !defined(TC_MIXED_GEMM_LAYOUT_ONLY)

extern "C" {

// 1 when this library was compiled with the sm_90a mixed-input kernels, 0 otherwise.
int tc_mixed_gemm_compiled_sm90() {
#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)
  return 1;
#else
  return 0;
#endif
}

// Bytes of workspace the kernel needs for this problem (scheme 4 = int4, 8 = int8); 0 on bad arguments.
size_t tc_mixed_gemm_workspace(int scheme, int M, int N, int K, int group) {
#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)
  if (bad_shape(M, N, K)) return 0;
#if TC_WITH_INT4
  if (scheme == 4) return GemmInt4::get_workspace_size(int4_args(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                                  M, N, K, group));
#endif
#if TC_WITH_INT8
  if (scheme == 8) return GemmInt8::get_workspace_size(int8_args(nullptr, nullptr, nullptr, nullptr, nullptr,
                                                                  M, N, K));
#endif
#endif
  return 0;
}

// out = x @ dequant(W)^T (+ residual, when not null; it may be out itself). int4: group-wise scale and zero.
int tc_mixed_gemm_int4_bf16(const void* x, const void* wq, const void* scales, const void* zeros, void* out,
                            const void* residual, int M, int N, int K, int group, void* stream, void* workspace,
                            size_t workspace_bytes) {
#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED) && TC_WITH_INT4
  if (bad_shape(M, N, K) || group <= 0) return kErrArgs;
  return run_gemm<GemmInt4>(int4_args(x, wq, scales, zeros, out, residual, M, N, K, group), stream, workspace,
                            workspace_bytes);
#elif defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)
  return kErrScheme;
#else
  return kErrCutlass + static_cast<int>(cutlass::Status::kErrorArchMismatch);
#endif
}

// int8: one scale per weight row.
int tc_mixed_gemm_int8_bf16(const void* x, const void* wq, const void* scales, void* out, const void* residual,
                            int M, int N, int K, void* stream, void* workspace, size_t workspace_bytes) {
#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED) && TC_WITH_INT8
  if (bad_shape(M, N, K)) return kErrArgs;
  return run_gemm<GemmInt8>(int8_args(x, wq, scales, out, residual, M, N, K), stream, workspace, workspace_bytes);
#elif defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)
  return kErrScheme;
#else
  return kErrCutlass + static_cast<int>(cutlass::Status::kErrorArchMismatch);
#endif
}

}  // extern "C"
#endif  // !TC_MIXED_GEMM_LAYOUT_ONLY
