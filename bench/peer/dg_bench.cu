// dg_bench: standalone timing harness for DeepGEMM's SM90 FP8 MQA logits kernels (the DSA lightning
// indexer's logits), for comparison with dsa_indexer on the same GPU. Measurement tool only; not part of
// the dsa_indexer project.
//
// The kernels are DeepGEMM's own device code (deep_gemm/include/deep_gemm/impls/*.cuh), instantiated here
// statically with the template parameters DeepGEMM's host code (csrc/jit_kernels/impls/sm90_fp8_mqa_logits.hpp,
// csrc/apis/attention.hpp) would hand its JIT for these shapes on a 132-SM H100/H200. The host side (tensor
// maps, shared memory sizes, grids, output strides) mirrors that host code; see bench/peer/README.md.
//
// Usage: dg_bench prefill S | dg_bench decode B T | dg_bench all   [--iters N]

#include <cuda.h>  // CUtensorMap types and enums only; the driver entry point comes from the runtime
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <deep_gemm/impls/sm90_fp8_mqa_logits.cuh>
#include <deep_gemm/impls/sm90_fp8_paged_mqa_logits.cuh>
// DeepGEMM JIT-compiles each kernel in its own translation unit; here they share one, and the clean-logits
// kernel's `extern __shared__ float smem_buffer[]` would clash with the `uint8_t smem_buffer[]` of the others.
// Renaming the symbol changes nothing else.
#define smem_buffer smem_buffer_clean_logits
#include <deep_gemm/impls/smxx_clean_logits.cuh>
#undef smem_buffer

// ---------------------------------------------------------------------------------------------------------
// Fixed problem constants and the template parameters DeepGEMM's host code picks (see bench/peer/README.md)
// ---------------------------------------------------------------------------------------------------------
constexpr int kNumSMs = 132;          // device_runtime->get_num_sms() = multiProcessorCount on H100 SXM / H200
constexpr int kHeads = 64, kDim = 128;
// prefill (fp8_fp4_mqa_logits -> sm90_fp8_mqa_logits)
constexpr int kBlockQH = 128, kBlockKV = 256, kBlockQ = kBlockQH / kHeads;  // block_q = 2
constexpr int kPrefillQStages = 3, kPrefillKVStages = 3, kSpecThreads = 128, kPrefillMathThreads = 512;
// clean logits (smxx_clean_logits)
constexpr int kCleanBlockKV = 8192, kCleanWarps = 8;
// decode (fp8_fp4_paged_mqa_logits -> sm90_fp8_paged_mqa_logits)
constexpr int kNextN = 1, kPageSize = 64, kSplitKV = 256, kMmaM = 64;
constexpr int kPagedMathWGs = kSplitKV / kMmaM, kPagedMathThreads = kPagedMathWGs * 128;
constexpr int kPagedQStages = 3, kPagedKVStages = 3;
constexpr int kPageBytes = kPageSize * (kDim + 4);  // 64 tokens x (128 fp8 bytes) then 64 fp32 scales = 8448

#define PREFILL_KERNEL                                                                                         \
    deep_gemm::sm90_fp8_mqa_logits<kHeads, kDim, false, kBlockQ, kBlockKV, kPrefillQStages, kPrefillKVStages, \
                                   kNumSMs, kSpecThreads, kPrefillMathThreads, float>
#define CLEAN_KERNEL deep_gemm::smxx_clean_logits<1, kCleanBlockKV, kCleanWarps, float>
#define PAGED_KERNEL                                                                                     \
    deep_gemm::sm90_fp8_paged_mqa_logits<kNextN, kHeads, kDim, kPageSize, true, false, kPagedQStages,   \
                                         kPagedKVStages, kSplitKV, kSpecThreads, kPagedMathThreads, float>

// ---------------------------------------------------------------------------------------------------------
// Utilities
// ---------------------------------------------------------------------------------------------------------
#define CK(x)                                                                                          \
    do {                                                                                               \
        cudaError_t e_ = (x);                                                                          \
        if (e_ != cudaSuccess) {                                                                       \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__, \
                    cudaGetErrorString(e_));                                                           \
            exit(3);                                                                                   \
        }                                                                                              \
    } while (0)

static int align_up(int x, int a) { return (x + a - 1) / a * a; }
static int64_t align_up64(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

struct DevBuf {
    void* p = nullptr;
    size_t bytes = 0;
    explicit DevBuf(size_t n) : bytes(n) { CK(cudaMalloc(&p, std::max<size_t>(n, 16))); }
    ~DevBuf() { if (p) cudaFree(p); }
    DevBuf(const DevBuf&) = delete;
    DevBuf& operator=(const DevBuf&) = delete;
    template <typename T> T* as() const { return static_cast<T*>(p); }
};

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
__device__ __forceinline__ float uniform01(uint64_t seed, uint64_t i) {
    return float(splitmix64(seed * 0x100000001B3ull + i) >> 40) * (1.0f / 16777216.0f);
}
// fp8 e4m3 values: uniform in [lo, hi], rounded to e4m3
__global__ void fill_fp8(uint8_t* dst, size_t n, uint64_t seed, float lo, float hi) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
        dst[i] = __nv_cvt_float_to_fp8(lo + (hi - lo) * uniform01(seed, i), __NV_SATFINITE, __NV_E4M3);
}
__global__ void fill_f32(float* dst, size_t n, uint64_t seed, float lo, float hi) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
        dst[i] = lo + (hi - lo) * uniform01(seed, i);
}
// Paged K cache in DeepGEMM's fused layout: per page, 64 x 128 fp8 bytes, then 64 fp32 scales
__global__ void fill_pages(uint8_t* pool, size_t num_pages, uint64_t seed) {
    const size_t n = num_pages * kPageBytes;
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        const size_t page = i / kPageBytes, off = i % kPageBytes;
        if (off < size_t(kPageSize) * kDim) {
            pool[i] = __nv_cvt_float_to_fp8(-2.f + 4.f * uniform01(seed, i), __NV_SATFINITE, __NV_E4M3);
        } else if ((off - kPageSize * kDim) % 4 == 0) {
            const size_t tok = page * kPageSize + (off - kPageSize * kDim) / 4;
            *reinterpret_cast<float*>(pool + i) = 0.25f + 0.75f * uniform01(seed ^ 0x5ca1e, tok);
        }
    }
}
static void launch_fill_fp8(void* p, size_t n, uint64_t seed) { fill_fp8<<<1024, 256>>>((uint8_t*)p, n, seed, -2.f, 2.f); CK(cudaGetLastError()); }
static void launch_fill_f32(void* p, size_t n, uint64_t seed, float lo, float hi) { fill_f32<<<1024, 256>>>((float*)p, n, seed, lo, hi); CK(cudaGetLastError()); }

static float fp8_e4m3_to_float(uint8_t b) {
    const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 0) v = std::ldexp(float(m) / 8.f, -6);
    else if (e == 15 && m == 7) v = NAN;
    else v = std::ldexp(1.f + float(m) / 8.f, e - 7);
    return s ? -v : v;
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda)
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static EncodeTiledFn encode_tiled() {
    static EncodeTiledFn fn = nullptr;
    if (!fn) {
        cudaDriverEntryPointQueryResult q;
        void* p = nullptr;
        CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q));
        if (q != cudaDriverEntryPointSuccess || !p) { fprintf(stderr, "cuTensorMapEncodeTiled not found\n"); exit(3); }
        fn = reinterpret_cast<EncodeTiledFn>(p);
    }
    return fn;
}
// Mirrors DeepGEMM's make_tma_2d_desc / make_tma_3d_desc (csrc/jit_kernels/impls/runtime_utils.hpp):
// swizzle_mode != 0 forces the smem inner dim to swizzle_mode / elem_size; L2 promotion 256B; no OOB fill.
static CUtensorMapSwizzle swizzle_of(int mode) {
    switch (mode) {
        case 0: case 16: return CU_TENSOR_MAP_SWIZZLE_NONE;
        case 32: return CU_TENSOR_MAP_SWIZZLE_32B;
        case 64: return CU_TENSOR_MAP_SWIZZLE_64B;
        case 128: return CU_TENSOR_MAP_SWIZZLE_128B;
    }
    fprintf(stderr, "bad swizzle\n"); exit(3);
}
static CUtensorMap make_tma_2d(void* ptr, CUtensorMapDataType dt, int elem_size, int gmem_inner, int gmem_outer,
                               int smem_inner, int smem_outer, int gmem_outer_stride, int swizzle_mode) {
    if (swizzle_mode != 0) smem_inner = swizzle_mode / elem_size;
    CUtensorMap m;
    const cuuint64_t gdims[2] = {cuuint64_t(gmem_inner), cuuint64_t(gmem_outer)};
    const cuuint32_t sdims[2] = {cuuint32_t(smem_inner), cuuint32_t(smem_outer)};
    const cuuint64_t gstrides[1] = {cuuint64_t(gmem_outer_stride) * elem_size};
    const cuuint32_t estrides[2] = {1, 1};
    CUresult r = encode_tiled()(&m, dt, 2, ptr, gdims, gstrides, sdims, estrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                swizzle_of(swizzle_mode), CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS && gmem_outer == 1 && gmem_outer_stride == 0) {
        // DeepGEMM passes outer stride 0 for the [1, N] prefill KV-scale map; with an outer dim of 1 the stride is
        // never used, so a driver that rejects 0 gets the natural (16-byte aligned) stride instead.
        static bool noted = false;
        if (!noted) { printf("note: driver rejected outer stride 0 for a 1-row tensor map (%d); using the natural stride\n", int(r)); noted = true; }
        const cuuint64_t natural[1] = {(cuuint64_t(gmem_inner) * elem_size + 15) / 16 * 16};
        r = encode_tiled()(&m, dt, 2, ptr, gdims, natural, sdims, estrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                           swizzle_of(swizzle_mode), CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    }
    if (r != CUDA_SUCCESS) { fprintf(stderr, "cuTensorMapEncodeTiled (2D) failed: %d\n", int(r)); exit(3); }
    return m;
}
static CUtensorMap make_tma_3d(void* ptr, CUtensorMapDataType dt, int elem_size, int d0, int d1, int d2, int s0,
                               int s1, int s2, int stride0, int stride1, int swizzle_mode) {
    if (swizzle_mode != 0) s0 = swizzle_mode / elem_size;
    CUtensorMap m;
    const cuuint64_t gdims[3] = {cuuint64_t(d0), cuuint64_t(d1), cuuint64_t(d2)};
    const cuuint32_t sdims[3] = {cuuint32_t(s0), cuuint32_t(s1), cuuint32_t(s2)};
    const cuuint64_t gstrides[2] = {cuuint64_t(stride0) * elem_size, cuuint64_t(stride1) * elem_size};
    const cuuint32_t estrides[3] = {1, 1, 1};
    const CUresult r = encode_tiled()(&m, dt, 3, ptr, gdims, gstrides, sdims, estrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                      swizzle_of(swizzle_mode), CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) { fprintf(stderr, "cuTensorMapEncodeTiled (3D) failed: %d\n", int(r)); exit(3); }
    return m;
}

static cudaLaunchConfig_t launch_config(int grid, int threads, int smem, cudaStream_t s) {
    // DeepGEMM's construct_launch_config: cluster 1 (no attribute); PDL only if deep_gemm.set_pdl(True)
    // (device_runtime's enable_pdl defaults to false), so no attribute either.
    cudaLaunchConfig_t c = {};
    c.gridDim = dim3(grid, 1, 1);
    c.blockDim = dim3(threads, 1, 1);
    c.dynamicSmemBytes = smem;
    c.stream = s;
    c.attrs = nullptr;
    c.numAttrs = 0;
    return c;
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One CUDA graph per rotated input copy, each capturing one call; latency = median of CUDA-event-timed
// single replays (replay i uses copy i mod copies), after warm-up replays. Same method as the project's
// bench/workloads.cpp (CapturedCalls::median_replay_us).
struct Captured {
    cudaStream_t stream;
    std::vector<cudaGraphExec_t> graphs;
    template <typename F> Captured(cudaStream_t s, int copies, F&& call) : stream(s) {
        for (int i = 0; i < copies; ++i) {
            cudaGraph_t g;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
            call(i);
            CK(cudaStreamEndCapture(s, &g));
            cudaGraphExec_t e;
            CK(cudaGraphInstantiate(&e, g, 0));
            CK(cudaGraphDestroy(g));
            graphs.push_back(e);
        }
    }
    ~Captured() { for (auto g : graphs) cudaGraphExecDestroy(g); }
    double median_us(int iters, int warmup = 5) const {
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        std::vector<double> t;
        for (int i = 0; i < iters + warmup; ++i) {
            CK(cudaEventRecord(a, stream));
            CK(cudaGraphLaunch(graphs[size_t(i) % graphs.size()], stream));
            CK(cudaEventRecord(b, stream));
            CK(cudaEventSynchronize(b));
            float ms = 0;
            CK(cudaEventElapsedTime(&ms, a, b));
            if (i >= warmup) t.push_back(ms * 1e3);
        }
        cudaEventDestroy(a);
        cudaEventDestroy(b);
        return median(t);
    }
};

// One row's fp8 queries [H][D] from the device, as floats.
static std::vector<float> queries_of(const uint8_t* device_row) {
    std::vector<uint8_t> q(size_t(kHeads) * kDim);
    CK(cudaMemcpy(q.data(), device_row, q.size(), cudaMemcpyDeviceToHost));
    std::vector<float> qf(q.size());
    for (size_t i = 0; i < q.size(); ++i) qf[i] = fp8_e4m3_to_float(q[i]);
    return qf;
}

// The reference logit of one key: scale * sum_h w_h * relu(q_h . k), in double.
static double reference_score(const std::vector<float>& q, const std::vector<float>& w, const float* key, double scale) {
    double acc = 0;
    for (int h = 0; h < kHeads; ++h) {
        double dot = 0;
        for (int d = 0; d < kDim; ++d) dot += double(q[size_t(h) * kDim + d]) * key[d];
        acc += double(w[h]) * std::max(dot, 0.0);
    }
    return scale * acc;
}

// Sampled logits of one row against their reference: |got - ref| <= 1e-2 of the row's largest |ref|.
struct Check {
    double worst = 0;
    long checked = 0, bad = 0;
    void row(const std::vector<float>& got_row, const std::vector<int>& at, const std::vector<double>& ref, double row_max) {
        for (size_t i = 0; i < at.size(); ++i) {
            const double got = got_row[at[i]];
            const double err = std::isfinite(got) ? std::fabs(got - ref[i]) / row_max : 1e30;
            worst = std::max(worst, err);
            ++checked;
            if (!(err <= 1e-2)) ++bad;
        }
    }
};

static size_t g_l2_bytes = 50u << 20;
static int g_iters = 20;
static bool g_any_fail = false;

// Same rule as the project's rotation_copies: enough copies for 3x the L2, at most 16, at most half the free memory
static int rotation_copies(size_t bytes) {
    bytes = std::max<size_t>(bytes, 1);
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    const size_t past = (3 * g_l2_bytes + bytes - 1) / bytes;
    return int(std::clamp<size_t>(std::min(past, free_b / 2 / bytes), 1, 16));
}

// ---------------------------------------------------------------------------------------------------------
// Prefill: one causal sequence, S query rows, N = S keys; row r sees keys [0, r + 1)
// ---------------------------------------------------------------------------------------------------------
struct PrefillCopy {
    std::unique_ptr<DevBuf> q, kv, kv_scales, weights, ks, ke;
    CUtensorMap tm_q, tm_kv, tm_kv_scales, tm_weights;
};

static void run_prefill(int S) {
    const int N = S;
    const int seq_len = S, seq_len_kv = N;
    // fp8_fp4_mqa_logits with max_seqlen_k = 0 (the default): stride_logits = align(seq_len_kv + block_kv, 1024 / 4),
    // logits = empty({align(seq_len, block_q), stride_logits}) (csrc/apis/attention.hpp)
    const int stride_logits = align_up(seq_len_kv + kBlockKV, 1024 / int(sizeof(float)));
    const int aligned_seq_len = align_up(seq_len, kBlockQ);

    // sm90_fp8_mqa_logits' smem formula (csrc/jit_kernels/impls/sm90_fp8_mqa_logits.hpp)
    const int smem_q = kBlockQ * kHeads * kDim, smem_w = kBlockQ * kHeads * 4, smem_kv = kBlockKV * kDim,
              smem_kvs = kBlockKV * 4;
    const int smem = kPrefillQStages * smem_q + kPrefillKVStages * smem_kv + kPrefillQStages * smem_w +
                     kPrefillKVStages * smem_kvs +
                     (kPrefillQStages * 2 + kPrefillKVStages * 2 + (kPrefillMathThreads / 128) * 2) * 8 + 4;
    const int clean_smem = kCleanBlockKV * int(sizeof(float));

    const size_t q_bytes = size_t(S) * kHeads * kDim, kv_bytes = size_t(N) * kDim,
                 kvs_bytes = size_t(align_up(N, 4)) * 4, w_bytes = size_t(S) * kHeads * 4, ks_bytes = size_t(S) * 4;
    const size_t logits_bytes = size_t(aligned_seq_len) * stride_logits * 4;
    DevBuf logits(logits_bytes);
    const int copies = rotation_copies(q_bytes + kv_bytes + kvs_bytes + w_bytes + 2 * ks_bytes);

    std::vector<int> h_ks(S, 0), h_ke(S);
    for (int r = 0; r < S; ++r) h_ke[r] = r + 1;

    std::vector<PrefillCopy> cp(copies);
    for (int c = 0; c < copies; ++c) {
        auto& p = cp[c];
        p.q = std::make_unique<DevBuf>(q_bytes);
        p.kv = std::make_unique<DevBuf>(kv_bytes);
        p.kv_scales = std::make_unique<DevBuf>(kvs_bytes);
        p.weights = std::make_unique<DevBuf>(w_bytes);
        p.ks = std::make_unique<DevBuf>(ks_bytes);
        p.ke = std::make_unique<DevBuf>(ks_bytes);
        const uint64_t seed = 1000 + 17 * c + S;
        launch_fill_fp8(p.q->p, q_bytes, seed + 1);
        launch_fill_fp8(p.kv->p, kv_bytes, seed + 2);
        launch_fill_f32(p.kv_scales->p, kvs_bytes / 4, seed + 3, 0.25f, 1.0f);
        launch_fill_f32(p.weights->p, w_bytes / 4, seed + 4, -1.f, 1.f);
        CK(cudaMemcpy(p.ks->p, h_ks.data(), ks_bytes, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(p.ke->p, h_ke.data(), ks_bytes, cudaMemcpyHostToDevice));
        // Tensor maps exactly as sm90_fp8_mqa_logits() builds them
        p.tm_q = make_tma_2d(p.q->p, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, kDim, seq_len * kHeads, kDim, kBlockQ * kHeads, kDim, kDim);
        p.tm_kv = make_tma_2d(p.kv->p, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, kDim, seq_len_kv, kDim, kBlockKV, kDim, kDim);
        p.tm_kv_scales = make_tma_2d(p.kv_scales->p, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, align_up(seq_len_kv, 4), 1, kBlockKV, 1, 0, 0);
        p.tm_weights = make_tma_2d(p.weights->p, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, kHeads, seq_len, kHeads, kBlockQ, kHeads, 0);
    }
    CK(cudaDeviceSynchronize());

    CK(cudaFuncSetAttribute(PREFILL_KERNEL, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    CK(cudaFuncSetAttribute(CLEAN_KERNEL, cudaFuncAttributeMaxDynamicSharedMemorySize, clean_smem));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));

    auto launch_logits = [&](int c) {
        const auto& p = cp[c];
        const cudaLaunchConfig_t cfg = launch_config(kNumSMs, kSpecThreads + kPrefillMathThreads, smem, st);
        CK(cudaLaunchKernelEx(&cfg, PREFILL_KERNEL, uint32_t(seq_len), uint32_t(seq_len_kv), uint32_t(0),
                              uint32_t(stride_logits), p.ks->as<uint32_t>(), p.ke->as<uint32_t>(), logits.as<float>(),
                              p.tm_q, p.tm_kv, p.tm_kv_scales, p.tm_weights));
    };
    auto launch_clean = [&](int c) {
        const auto& p = cp[c];
        // smxx_clean_logits(logits, ks, ke, next_n = 1, seq_len, seq_len_kv, stride_logits): grid num_sms, 8 warps
        const cudaLaunchConfig_t cfg = launch_config(kNumSMs, kCleanWarps * 32, clean_smem, st);
        CK(cudaLaunchKernelEx(&cfg, CLEAN_KERNEL, uint32_t(seq_len), uint32_t(seq_len_kv), uint64_t(stride_logits),
                              (const uint32_t*)p.ks->as<uint32_t>(), (const uint32_t*)p.ke->as<uint32_t>(),
                              logits.as<float>()));
    };

    // ---- Correctness: poison (NaN), one eager call (logits + clean, the API default) on copy 0, compare
    CK(cudaMemsetAsync(logits.p, 0xFF, logits_bytes, st));
    launch_logits(0);
    launch_clean(0);
    CK(cudaStreamSynchronize(st));
    CK(cudaGetLastError());
    {
        std::vector<uint8_t> h_kv(kv_bytes);
        std::vector<float> h_kvs(N);
        CK(cudaMemcpy(h_kv.data(), cp[0].kv->p, kv_bytes, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(h_kvs.data(), cp[0].kv_scales->p, size_t(N) * 4, cudaMemcpyDeviceToHost));
        std::vector<float> kvf(kv_bytes);
        for (size_t i = 0; i < kv_bytes; ++i) kvf[i] = fp8_e4m3_to_float(h_kv[i]);
        const int rows[] = {0, 1, 2, S / 3, S / 2 + 1, S - 2, S - 1};
        std::mt19937 rng(S);
        Check check;
        long n_mask_bad = 0;
        for (int r : rows) {
            const std::vector<float> qf = queries_of(cp[0].q->as<uint8_t>() + size_t(r) * kHeads * kDim);
            std::vector<float> hw(kHeads), hrow(N);
            CK(cudaMemcpy(hw.data(), cp[0].weights->as<float>() + size_t(r) * kHeads, kHeads * 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(hrow.data(), logits.as<float>() + size_t(r) * stride_logits, size_t(N) * 4, cudaMemcpyDeviceToHost));
            std::vector<int> cols = {0, r};
            for (int i = 0; i < 384; ++i) cols.push_back(int(rng() % uint32_t(r + 1)));
            std::vector<double> ref(cols.size());
            double row_max = 1e-30;
            for (size_t ci = 0; ci < cols.size(); ++ci) {
                const int t = cols[ci];
                ref[ci] = reference_score(qf, hw, &kvf[size_t(t) * kDim], h_kvs[t]);
                row_max = std::max(row_max, std::fabs(ref[ci]));
            }
            check.row(hrow, cols, ref, row_max);
            // clean_logits: columns past the window must be -inf
            for (int i = 0; i < 16 && r + 1 < N; ++i) {
                const int t = r + 1 + int(rng() % uint32_t(N - r - 1));
                if (!(std::isinf(hrow[t]) && hrow[t] < 0)) ++n_mask_bad;
            }
        }
        const bool ok = check.bad == 0 && n_mask_bad == 0;
        if (!ok) g_any_fail = true;
        printf("check %s prefill S=%d (values=%ld bad=%ld max_err/rowmax=%.3g; -inf mask bad=%ld)\n",
               ok ? "PASS" : "FAIL", S, check.checked, check.bad, check.worst, n_mask_bad);
    }

    // ---- Timing
    const Captured logits_only(st, copies, [&](int c) { launch_logits(c); });
    const Captured with_clean(st, copies, [&](int c) { launch_logits(c); launch_clean(c); });
    const double us = logits_only.median_us(g_iters);
    const double us_clean = with_clean.median_us(g_iters);
    CK(cudaGetLastError());
    const double cost = double(S) * (S + 1) / 2;  // (q, k) pairs inside the causal windows
    const double flops = 2.0 * cost * kHeads * kDim;
    printf("dg prefill S=%d N=%d us=%.1f with_clean_us=%.1f tflops=%.1f copies=%d\n", S, N, us, us_clean,
           flops / (us * 1e-6) / 1e12, copies);
    fflush(stdout);
    CK(cudaStreamDestroy(st));
}

// ---------------------------------------------------------------------------------------------------------
// Decode: B sequences of T tokens each, next_n = 1, page size 64, fused fp8 K cache
// ---------------------------------------------------------------------------------------------------------
template <int kAlignedB>
static void launch_metadata_t(cudaStream_t st, int B, const uint32_t* ctx, uint32_t* meta) {
    auto kern = deep_gemm::sched::sm90_paged_mqa_logits_metadata<kAlignedB, kSplitKV, kNumSMs, false>;
    const int smem = kAlignedB * int(sizeof(int));  // is_varlen = false: aligned_batch_size ints
    static bool attr = false;
    if (!attr) { CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)); attr = true; }
    const cudaLaunchConfig_t cfg = launch_config(1, 32, smem, st);
    CK(cudaLaunchKernelEx(&cfg, kern, uint32_t(B), uint32_t(kNextN), true, ctx, (const uint32_t*)nullptr, meta));
}
static void launch_metadata(cudaStream_t st, int B, const uint32_t* ctx, uint32_t* meta) {
    switch (align_up(B, 32)) {
        case 32: return launch_metadata_t<32>(st, B, ctx, meta);
        case 64: return launch_metadata_t<64>(st, B, ctx, meta);
        case 128: return launch_metadata_t<128>(st, B, ctx, meta);
        case 256: return launch_metadata_t<256>(st, B, ctx, meta);
    }
    fprintf(stderr, "batch size %d not instantiated (aligned batch sizes 32/64/128/256 are)\n", B);
    exit(2);
}

static void run_decode(int B, int T) {
    const int P = (T + kPageSize - 1) / kPageSize;  // pages per sequence = max_blocks
    const size_t pages_per_copy = size_t(B) * P;
    const int copies = rotation_copies(pages_per_copy * kPageBytes);
    const size_t num_pages = pages_per_copy * copies;
    if (num_pages > size_t(INT32_MAX)) { fprintf(stderr, "too many pages\n"); exit(2); }
    // logits: {B * next_n, align(align(max_context_len, split_kv), 1024 / 4)} fp32 (csrc/apis/attention.hpp)
    const int max_context_len = T;
    const int logits_stride = align_up(align_up(max_context_len, kSplitKV), 1024 / int(sizeof(float)));

    DevBuf pool(num_pages * kPageBytes);
    DevBuf q(size_t(B) * kNextN * kHeads * kDim), w(size_t(B) * kNextN * kHeads * 4);
    DevBuf ctx(size_t(B) * kNextN * 4), meta(size_t(kNumSMs + 1) * 2 * 4);
    DevBuf tables(size_t(copies) * pages_per_copy * 4);
    DevBuf logits(size_t(B) * kNextN * logits_stride * 4);

    fill_pages<<<2048, 256>>>(pool.as<uint8_t>(), num_pages, 77 + B * 1000003ull + T);
    CK(cudaGetLastError());
    launch_fill_fp8(q.p, q.bytes, 5 + B + T);
    launch_fill_f32(w.p, w.bytes / 4, 6 + B + T, -1.f, 1.f);
    std::vector<int> h_ctx(size_t(B) * kNextN, T);  // 2D context lens [B, next_n]
    CK(cudaMemcpy(ctx.p, h_ctx.data(), ctx.bytes, cudaMemcpyHostToDevice));
    // Block tables: copy c is a [B, P] table; together they are a random permutation of all physical pages
    std::vector<int> h_tables(num_pages);
    std::iota(h_tables.begin(), h_tables.end(), 0);
    std::mt19937 rng(B * 7919 + T);
    std::shuffle(h_tables.begin(), h_tables.end(), rng);
    CK(cudaMemcpy(tables.p, h_tables.data(), tables.bytes, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());

    // Tensor maps exactly as sm90_fp8_paged_mqa_logits() builds them (next_n_atom = 1)
    const int num_kv_blocks = int(num_pages);
    const CUtensorMap tm_q = make_tma_2d(q.p, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, kDim, B * kNextN * kHeads, kDim,
                                         1 * kHeads, /*q.stride(2)=*/kDim, kDim);
    const CUtensorMap tm_kv = make_tma_3d(pool.p, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, kDim, kPageSize, num_kv_blocks,
                                          kDim, kPageSize, 1, /*kv_cache.stride(1)=*/kDim,
                                          /*kv_cache.stride(0)=*/kPageBytes, kDim);
    const CUtensorMap tm_kvs = make_tma_2d(pool.as<uint8_t>() + kPageSize * kDim, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4,
                                           kPageSize, num_kv_blocks, kPageSize, 1, /*stride(0)=*/kPageBytes / 4, 0);
    const CUtensorMap tm_w = make_tma_2d(w.p, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, kHeads, B * kNextN, kHeads, 1,
                                         /*weights.stride(0)=*/kHeads, 0);

    // smem formula of sm90_fp8_paged_mqa_logits()
    const int swz = kDim * 8;
    const int q_stage = kNextN * kHeads * kDim, w_stage = align_up(kNextN * kHeads * 4, swz);
    const int q_pipe = kPagedQStages * (q_stage + w_stage) + align_up(kPagedQStages * 8 * 2, swz);
    const int kv_stage = kPageSize * kDim, kvs_stage = align_up(kPageSize * 4, swz);
    const int kv_pipe = kPagedKVStages * (kv_stage + kvs_stage) + align_up(kPagedKVStages * 8 * 2, swz);
    const int smem = q_pipe + kPagedMathWGs * kv_pipe + kPagedMathWGs * 2 * 8 + 4;
    CK(cudaFuncSetAttribute(PAGED_KERNEL, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));

    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    auto launch_logits = [&](int c) {
        const cudaLaunchConfig_t cfg = launch_config(kNumSMs, kSpecThreads + kPagedMathThreads, smem, st);
        CK(cudaLaunchKernelEx(&cfg, PAGED_KERNEL, uint32_t(B), uint32_t(logits_stride), uint32_t(P),
                              (const uint32_t*)ctx.as<uint32_t>(), logits.as<float>(),
                              (const uint32_t*)(tables.as<uint32_t>() + size_t(c) * pages_per_copy),
                              (const uint32_t*)nullptr, (const uint32_t*)meta.as<uint32_t>(), tm_q, tm_kv, tm_kvs, tm_w));
    };
    auto launch_meta = [&]() { launch_metadata(st, B, ctx.as<uint32_t>(), meta.as<uint32_t>()); };

    // ---- Correctness: poison, metadata + logits on copy 0, compare sampled entries
    CK(cudaMemsetAsync(logits.p, 0xFF, logits.bytes, st));
    launch_meta();
    launch_logits(0);
    CK(cudaStreamSynchronize(st));
    CK(cudaGetLastError());
    {
        std::vector<int> bs = {0, B / 2, B - 1};
        bs.erase(std::unique(bs.begin(), bs.end()), bs.end());
        Check check;
        std::vector<uint8_t> page(kPageBytes);
        for (int b : bs) {
            const std::vector<float> qf = queries_of(q.as<uint8_t>() + size_t(b) * kHeads * kDim);
            std::vector<float> hw(kHeads), hrow(T);
            CK(cudaMemcpy(hw.data(), w.as<float>() + size_t(b) * kHeads, kHeads * 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(hrow.data(), logits.as<float>() + size_t(b) * logits_stride, size_t(T) * 4, cudaMemcpyDeviceToHost));
            std::vector<int> toks = {0, 63, 64, T - 1};
            for (int i = 0; i < 128; ++i) toks.push_back(int(rng() % uint32_t(T)));
            std::vector<double> ref(toks.size());
            double row_max = 1e-30;
            for (size_t ti = 0; ti < toks.size(); ++ti) {
                const int t = toks[ti];
                const int phys = h_tables[size_t(b) * P + t / kPageSize];  // copy 0's table
                CK(cudaMemcpy(page.data(), pool.as<uint8_t>() + size_t(phys) * kPageBytes, kPageBytes, cudaMemcpyDeviceToHost));
                const int slot = t % kPageSize;
                float scale;
                std::memcpy(&scale, page.data() + kPageSize * kDim + slot * 4, 4);
                float key[kDim];
                for (int d = 0; d < kDim; ++d) key[d] = fp8_e4m3_to_float(page[size_t(slot) * kDim + d]);
                ref[ti] = reference_score(qf, hw, key, scale);
                row_max = std::max(row_max, std::fabs(ref[ti]));
            }
            check.row(hrow, toks, ref, row_max);
        }
        const bool ok = check.bad == 0;
        if (!ok) g_any_fail = true;
        printf("check %s decode %dx%d (values=%ld bad=%ld max_err/rowmax=%.3g)\n", ok ? "PASS" : "FAIL", B, T,
               check.checked, check.bad, check.worst);
    }

    // ---- Timing
    const Captured logits_only(st, copies, [&](int c) { launch_logits(c); });
    const Captured with_meta(st, copies, [&](int c) { launch_meta(); launch_logits(c); });
    const Captured meta_only(st, 1, [&](int) { launch_meta(); });
    const double us = logits_only.median_us(g_iters);
    const double us_meta = with_meta.median_us(g_iters);
    const double us_meta_only = meta_only.median_us(g_iters);
    // Also back-to-back: 10 calls (rotating copies) in one graph, per-call time (no per-replay launch gap)
    constexpr int kB2B = 10;
    const Captured b2b(st, 1, [&](int) { for (int i = 0; i < kB2B; ++i) launch_logits(i % copies); });
    const Captured b2b_meta(st, 1, [&](int) { for (int i = 0; i < kB2B; ++i) { launch_meta(); launch_logits(i % copies); } });
    const double us_b2b = b2b.median_us(std::max(5, g_iters / 2)) / kB2B;
    const double us_b2b_meta = b2b_meta.median_us(std::max(5, g_iters / 2)) / kB2B;
    CK(cudaGetLastError());
    const double kv_bytes = double(B) * T * (kDim + 4);
    const double flops = 2.0 * B * kNextN * double(T) * kHeads * kDim;
    printf("dg decode %dx%d logits_us=%.1f with_metadata_us=%.1f metadata_us=%.1f b2b_logits_us=%.1f "
           "b2b_with_metadata_us=%.1f kv_GBps=%.0f tflops=%.1f copies=%d\n",
           B, T, us, us_meta, us_meta_only, us_b2b, us_b2b_meta, kv_bytes / (us * 1e-6) / 1e9,
           flops / (us * 1e-6) / 1e12, copies);
    fflush(stdout);
    CK(cudaStreamDestroy(st));
}

static void usage() {
    fprintf(stderr, "usage: dg_bench prefill S | dg_bench decode B T | dg_bench all   [--iters N]\n");
    exit(2);
}

int main(int argc, char** argv) {
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--iters" && i + 1 < argc) g_iters = std::max(1, atoi(argv[++i]));
        else args.push_back(argv[i]);
    }
    if (args.empty()) usage();

    int dev = 0;
    CK(cudaSetDevice(dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    int l2 = 0, clk = 0, mclk = 0;
    CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, dev);
    cudaDeviceGetAttribute(&mclk, cudaDevAttrMemoryClockRate, dev);
    g_l2_bytes = size_t(l2);
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    printf("device: %s sm_%d%d SMs=%d L2=%d MB mem=%.0f GB clock=%d MHz driver=%d runtime=%d iters=%d\n", prop.name,
           prop.major, prop.minor, prop.multiProcessorCount, l2 >> 20, prop.totalGlobalMem / 1e9, clk / 1000, drv, rt,
           g_iters);
    if (prop.major != 9 || prop.minor != 0) { fprintf(stderr, "needs sm_90 (H100/H200)\n"); return 2; }
    if (prop.multiProcessorCount != kNumSMs) {
        fprintf(stderr, "built for %d SMs (DeepGEMM bakes num_sms into the kernels); this device has %d\n", kNumSMs,
                prop.multiProcessorCount);
        return 2;
    }

    const int prefill_S[] = {4096, 8192, 16384, 32768};
    const int decode_shapes[][2] = {{32, 6400},   {1, 131072},  {8, 8192},    {64, 8192}, {32, 32768},
                                    {256, 8192},  {16, 131072}, {128, 32768}, {128, 4096}};
    if (args[0] == "prefill" && args.size() == 2) {
        run_prefill(atoi(args[1].c_str()));
    } else if (args[0] == "decode" && args.size() == 3) {
        run_decode(atoi(args[1].c_str()), atoi(args[2].c_str()));
    } else if (args[0] == "all" && args.size() == 1) {
        for (int S : prefill_S) run_prefill(S);
        for (auto& s : decode_shapes) run_decode(s[0], s[1]);
    } else {
        usage();
    }
    printf("overall %s\n", g_any_fail ? "FAIL" : "PASS");
    return g_any_fail ? 1 : 0;
}
