// Copies of whole tokens between packed arrays and the paged cache layout: one warp per token, each lane
// moving 4 key bytes; lane 0 moves the scale. The cache may be one shard of a sharded cache (launch.h).
#include "common/constants.hpp"
#include "common/shard_rule.h"
#include "kernels/launch.h"

namespace dsa::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
static_assert(kHeadDim == 32 * 4, "a warp moves one key, 4 bytes a lane");

// Where a global slot lives in this shard: null when another rank holds its page.
struct Shard {
    uint8_t* cache;
    int64_t stride;
    int P;
    int ranks, rank;

    __device__ uint8_t* page(int64_t slot) const {
        const int64_t page = slot / P;
        return shard_owner(page, ranks) == rank ? cache + shard_local_page(page, ranks) * stride : nullptr;
    }
    __device__ uint8_t* key(uint8_t* page, int64_t slot) const { return page + (slot % P) * kHeadDim; }
    __device__ float* scale(uint8_t* page, int64_t slot) const {
        return reinterpret_cast<float*>(page + int64_t(P) * kHeadDim) + slot % P;
    }
};

__global__ void scatter_kernel(Shard shard, const int64_t* slots, const int64_t* source, int64_t count,
                               const uint8_t* keys, const float* scales) {
    const int64_t t = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (t >= count) return;
    uint8_t* page = shard.page(slots[t]);
    if (!page) return;
    const int64_t src = source[t];
    uint32_t word;
    memcpy(&word, keys + src * kHeadDim + lane * 4, 4);  // packed keys may be unaligned to 4 only in the host staging
    memcpy(shard.key(page, slots[t]) + lane * 4, &word, 4);
    if (lane == 0) *shard.scale(page, slots[t]) = scales[src];
}

__global__ void gather_kernel(Shard shard, const int64_t* slots, int64_t count, uint8_t* keys, float* scales) {
    const int64_t t = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (t >= count) return;
    uint8_t* page = shard.page(slots[t]);
    if (!page) return;
    uint32_t word;
    memcpy(&word, shard.key(page, slots[t]) + lane * 4, 4);
    memcpy(keys + t * kHeadDim + lane * 4, &word, 4);
    if (lane == 0) scales[t] = *shard.scale(page, slots[t]);
}

unsigned blocks_for(int64_t count) { return unsigned((count + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

cudaError_t scatter_tokens(uint8_t* cache, int64_t page_stride_bytes, int page_size, int ranks, int rank,
                           const int64_t* slots, const int64_t* source_index, int64_t count, const uint8_t* keys,
                           const float* scales, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    scatter_kernel<<<blocks_for(count), kWarpsPerBlock * 32, 0, stream>>>(
        Shard{cache, page_stride_bytes, page_size, ranks, rank}, slots, source_index, count, keys, scales);
    return cudaGetLastError();
}

cudaError_t gather_tokens(const uint8_t* cache, int64_t page_stride_bytes, int page_size, int ranks, int rank,
                          const int64_t* slots, int64_t count, uint8_t* keys, float* scales, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    gather_kernel<<<blocks_for(count), kWarpsPerBlock * 32, 0, stream>>>(
        Shard{const_cast<uint8_t*>(cache), page_stride_bytes, page_size, ranks, rank}, slots, count, keys, scales);
    return cudaGetLastError();
}

}  // namespace dsa::kernels
