// Scoring: score(r, p) = scale_p * sum_h w[r][h] * relu(q[r][h] . k_p) for every visible p of every row,
// written to the workspace for the selection kernel. One CTA walks tiles of 128 tokens of one group with a
// kStages-deep cp.async pipeline; the tile math is wgmma (sm_90a), fp8 mma.sync (sm_89+) or plain CUDA
// cores (launch_score_heads in topk_kernels.cu picks one).
#pragma once

#include "kernels/score_common.cuh"
#include "kernels/sm90.cuh"

namespace dsa::kernels {

constexpr int kMaxGroupRows = 4;  // next_n
constexpr int kStages = 3;        // key tiles in flight per CTA: two loading while one is scored
constexpr int kWeightBytes = kMaxGroupRows * 64 * 4;
constexpr int kSmemAlign = 1024;  // 128-byte-swizzled wgmma operands start on 1024-byte boundaries

// Dynamic shared memory of the scoring kernel: [queries: rows * H * 128][weights: 1 KB][kStages key tiles]
// [kStages scale tiles], behind up to 1 KB of alignment padding. Every region starts 1024-byte aligned.
__host__ __device__ constexpr int score_query_bytes(int group_rows, int heads) { return group_rows * heads * kHeadDim; }
__host__ __device__ constexpr int score_smem_bytes(int group_rows, int heads) {
    return kSmemAlign + score_query_bytes(group_rows, heads) + kWeightBytes + kStages * (kTileBytes + kTileTokens * 4);
}

// fp8 e4m3fn -> fp32 without tables: the 7 magnitude bits placed in a float's exponent/mantissa field are the
// value times 2^-120 (subnormals included); S.1111.111 is NaN.
__device__ __forceinline__ float fp8_to_float(uint32_t byte) {
    const uint32_t magnitude = byte & 0x7fu;
    const float value = __uint_as_float(magnitude << 20) * 0x1p120f;
    const float signed_value = (byte & 0x80u) ? -value : value;
    return magnitude == 0x7fu ? __int_as_float(0x7fffffff) : signed_value;
}

// CUDA-core tile math: thread i scores token i for every row of the group.
template <int H>
struct PortableTileMath {
    template <class Groups>
    __device__ static void run(const Groups& groups, int g, int64_t n_tokens, int64_t tile_begin, const uint8_t* q_smem,
                               const float* w_smem, const uint8_t* keys, const float* scales, float* scores) {
        const int i = threadIdx.x;
        const int64_t p = tile_begin + i;
        for (int j = 0; j < groups.rows(g); ++j) {
            if (p >= groups.visible(n_tokens, j)) continue;
            float dot[H];
#pragma unroll
            for (int h = 0; h < H; ++h) dot[h] = 0.0f;
            for (int c = 0; c < kHeadDim / 16; ++c) {
                const uint4 kv = *reinterpret_cast<const uint4*>(keys + swizzled_offset(i, c));
                const uint32_t kw[4] = {kv.x, kv.y, kv.z, kv.w};
                float kf[16];
#pragma unroll
                for (int e = 0; e < 16; ++e) kf[e] = fp8_to_float((kw[e / 4] >> (8 * (e % 4))) & 0xffu);
#pragma unroll
                for (int h = 0; h < H; ++h) {
                    const uint4 qv = *reinterpret_cast<const uint4*>(q_smem + swizzled_offset(j * H + h, c));
                    const uint32_t qw[4] = {qv.x, qv.y, qv.z, qv.w};
#pragma unroll
                    for (int e = 0; e < 16; ++e) dot[h] += fp8_to_float((qw[e / 4] >> (8 * (e % 4))) & 0xffu) * kf[e];
                }
            }
            float total = 0.0f;
#pragma unroll
            for (int h = 0; h < H; ++h) total += w_smem[j * H + h] * relu_keep_nan(dot[h]);
            scores[(groups.first_row(g) + j) * groups.score_stride + p] = scales[i] * total;
        }
    }
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(p)));
}

// fp8 tensor-core tile math (mma.sync m16n8k32 e4m3, sm_89+): tokens are M, heads are N, dims are K.
// Warp w owns tokens [32w, 32w + 32) of the tile: two m16 tiles whose A fragments stay in registers while
// the heads stream through in n8 tiles; each n8 tile's accumulator is folded into the weighted head sum
// right away, so only 8 accumulators are live.
template <int H>
struct TensorCoreTileMath {
    __device__ static void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
        asm(
            "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
        __trap();  // never launched below sm_89 (see launch_score_heads in topk_kernels.cu)
#endif
    }

    template <class Groups>
    __device__ static void run(const Groups& groups, int g, int64_t n_tokens, int64_t tile_begin, const uint8_t* q_smem,
                               const float* w_smem, const uint8_t* keys, const float* scales, float* scores) {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        const int quad_row = lane >> 2, quad_col = lane & 3;
        uint32_t a[2][4][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int ks = 0; ks < 4; ++ks) {
                const int row = warp * 32 + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                ldmatrix_x4(a[mt][ks], keys + swizzled_offset(row, 2 * ks + (lane >> 4)));
            }
        for (int j = 0; j < groups.rows(g); ++j) {
            const int64_t visible = groups.visible(n_tokens, j);
            float part[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
            // Two n8 tiles x two m16 tiles: four independent accumulation chains keep the tensor pipe busy.
#pragma unroll
            for (int nt = 0; nt < H / 8; nt += 2) {
                uint32_t b[2][8];  // per n8 tile: chunks 0-7 as (k-step 0..3) x (b0, b1)
#pragma unroll
                for (int u = 0; u < 2; ++u) {
                    const int head_row = j * H + (nt + u) * 8 + (lane & 7);
                    ldmatrix_x4(*reinterpret_cast<uint32_t(*)[4]>(&b[u][0]), q_smem + swizzled_offset(head_row, lane >> 3));
                    ldmatrix_x4(*reinterpret_cast<uint32_t(*)[4]>(&b[u][4]), q_smem + swizzled_offset(head_row, 4 + (lane >> 3)));
                }
                float c[2][2][4] = {};
#pragma unroll
                for (int ks = 0; ks < 4; ++ks)
#pragma unroll
                    for (int u = 0; u < 2; ++u)
#pragma unroll
                        for (int mt = 0; mt < 2; ++mt) mma(c[u][mt], a[mt][ks], b[u][2 * ks], b[u][2 * ks + 1]);
#pragma unroll
                for (int u = 0; u < 2; ++u) {
                    const float w0 = w_smem[j * H + (nt + u) * 8 + 2 * quad_col];
                    const float w1 = w_smem[j * H + (nt + u) * 8 + 2 * quad_col + 1];
#pragma unroll
                    for (int mt = 0; mt < 2; ++mt) {
                        part[mt][0] += w0 * relu_keep_nan(c[u][mt][0]) + w1 * relu_keep_nan(c[u][mt][1]);
                        part[mt][1] += w0 * relu_keep_nan(c[u][mt][2]) + w1 * relu_keep_nan(c[u][mt][3]);
                    }
                }
            }
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    float v = part[mt][half];
                    v += __shfl_xor_sync(0xffffffffu, v, 1);
                    v += __shfl_xor_sync(0xffffffffu, v, 2);
                    const int token = warp * 32 + mt * 16 + half * 8 + quad_row;
                    const int64_t p = tile_begin + token;
                    if (quad_col == 0 && p < visible)
                        scores[(groups.first_row(g) + j) * groups.score_stride + p] = scales[token] * v;
                }
        }
    }
};

// fp8 tensor cores through wgmma (sm_90a): the warpgroup multiplies 64 tokens x H heads x 32 dims per
// instruction, both operands straight from the 128-byte-swizzled shared tiles (the swizzle of
// swizzled_offset is exactly the hardware's 128B pattern). Two m64 blocks cover the 128-token tile.
template <int H>
struct WgmmaTileMath {
    static constexpr int kAcc = H / 2;  // fp32 accumulators per thread of an m64 x H block

    __device__ static uint64_t descriptor(const void* smem) { return wgmma_descriptor(smem); }

    template <int Accumulate>
    __device__ static void wgmma(float (&d)[kAcc], uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
        wgmma_fp8<H, Accumulate>(d, a, b);
#else
        __trap();  // only launched when the sm_90a image is present (see launch_score_for)
#endif
    }

    __device__ static void wgmma_fence() { kernels::wgmma_fence(); }
    __device__ static void wgmma_commit_and_wait() { kernels::wgmma_commit_and_wait(); }

    // Keeps the compiler from moving accumulator reads or writes across the asynchronous wgmma.
    __device__ static void fence_accumulators(float (&d)[kAcc]) {
#pragma unroll
        for (int i = 0; i < kAcc; ++i) asm volatile("" : "+f"(d[i])::"memory");
    }

    template <class Groups>
    __device__ static void run(const Groups& groups, int g, int64_t n_tokens, int64_t tile_begin, const uint8_t* q_smem,
                               const float* w_smem, const uint8_t* keys, const float* scales, float* scores) {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        const int quad_row = lane >> 2, quad_col = lane & 3;
        for (int j = 0; j < groups.rows(g); ++j) {
            float d[2][kAcc];
#pragma unroll
            for (int mb = 0; mb < 2; ++mb) fence_accumulators(d[mb]);
            wgmma_fence();
#pragma unroll
            for (int mb = 0; mb < 2; ++mb) {
#pragma unroll
                for (int ks = 0; ks < 4; ++ks) {
                    const uint64_t a = descriptor(keys + mb * 64 * kHeadDim + ks * 32);
                    const uint64_t b = descriptor(q_smem + j * H * kHeadDim + ks * 32);
                    if (ks == 0) wgmma<0>(d[mb], a, b);
                    else wgmma<1>(d[mb], a, b);
                }
            }
            wgmma_commit_and_wait();
#pragma unroll
            for (int mb = 0; mb < 2; ++mb) fence_accumulators(d[mb]);

            const int64_t visible = groups.visible(n_tokens, j);
#pragma unroll
            for (int mb = 0; mb < 2; ++mb) {
                float part[2] = {0.0f, 0.0f};  // tokens quad_row and quad_row + 8 of this warp's 16
#pragma unroll
                for (int i = 0; i < H / 8; ++i) {
                    const float w0 = w_smem[j * H + i * 8 + 2 * quad_col];
                    const float w1 = w_smem[j * H + i * 8 + 2 * quad_col + 1];
                    part[0] += w0 * relu_keep_nan(d[mb][i * 4 + 0]) + w1 * relu_keep_nan(d[mb][i * 4 + 1]);
                    part[1] += w0 * relu_keep_nan(d[mb][i * 4 + 2]) + w1 * relu_keep_nan(d[mb][i * 4 + 3]);
                }
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    float v = part[half];
                    v += __shfl_xor_sync(0xffffffffu, v, 1);
                    v += __shfl_xor_sync(0xffffffffu, v, 2);
                    const int token = mb * 64 + warp * 16 + half * 8 + quad_row;
                    const int64_t p = tile_begin + token;
                    if (quad_col == 0 && p < visible)
                        scores[(groups.first_row(g) + j) * groups.score_stride + p] = scales[token] * v;
                }
            }
        }
    }
};

// grid: (CTAs per group, groups). Dynamic shared memory: score_smem_bytes(group_rows, heads).
template <class Groups, class TileMath>
__global__ void __launch_bounds__(kScoreThreads) score_kernel(Groups groups, int heads, int group_rows, float* scores) {
    extern __shared__ __align__(128) uint8_t smem_raw[];
    uint8_t* smem = smem_raw + ((kSmemAlign - smem_address(smem_raw) % kSmemAlign) % kSmemAlign);
    uint8_t* q_smem = smem;
    float* w_smem = reinterpret_cast<float*>(smem + score_query_bytes(group_rows, heads));
    uint8_t* key_buf = smem + score_query_bytes(group_rows, heads) + kWeightBytes;
    float* scale_buf = reinterpret_cast<float*>(key_buf + kStages * kTileBytes);

    const int g = blockIdx.y;
    const int64_t n = groups.tokens(g);
    const int64_t tiles = (n + kTileTokens - 1) / kTileTokens;
    int64_t tile = blockIdx.x;
    if (tile >= tiles) return;

    stage_queries(groups, g, heads, q_smem, w_smem);
    // Prologue: the first kStages - 1 tiles of this CTA (tile, tile + gridDim.x, ...) start loading.
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        const int64_t t = tile + int64_t(s) * gridDim.x;
        if (t < tiles) stage_key_tile(groups, g, t * kTileTokens, n, key_buf + s * kTileBytes, scale_buf + s * kTileTokens);
        cp_async_commit();
    }
    for (int stage = 0; tile < tiles; tile += gridDim.x, stage = (stage + 1) % kStages) {
        const int64_t ahead = tile + int64_t(kStages - 1) * gridDim.x;
        const int ahead_stage = (stage + kStages - 1) % kStages;
        if (ahead < tiles)
            stage_key_tile(groups, g, ahead * kTileTokens, n, key_buf + ahead_stage * kTileBytes,
                           scale_buf + ahead_stage * kTileTokens);
        cp_async_commit();
        cp_async_wait<kStages - 1>();
        // wgmma reads shared memory through the async proxy: order this thread's copies before it.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
        __syncthreads();
        TileMath::run(groups, g, n, tile * kTileTokens, q_smem, w_smem, key_buf + stage * kTileBytes,
                      scale_buf + stage * kTileTokens, scores);
        __syncthreads();  // the next iteration's prefetch overwrites this stage
    }
}

}  // namespace dsa::kernels
