// The launch functions of all device code: the only door from src/gpu into kernels/. Host-only header; it
// and every file of kernels/ include nothing of src/ but src/common.
// Every launch is asynchronous on `stream`, allocates nothing and never synchronises (graph-capturable).
// A launch returns a CUDA error only for CUDA failures: logical limits (max_merge_ranks) are the caller's
// preconditions, checked on the host before anything is queued.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/problem.hpp"

namespace dsa::kernels {

struct DeviceTraits {
    int sm_count = 0;
    int compute_capability = 0;  // major * 10 + minor
};

enum class ScoreKernel {
    Auto,      // the fastest kernels this device runs (fp8 tensor cores on sm_89+, wgmma on sm_90a); on sm_90a
               // the fused kernels for every call they run. One kernel whatever the batch: the kernels round
               // scores differently, and a row's result may not depend on its batch (SPEC section 1). The
               // fused decode kernel is also the fastest on every batch measured (bench/NOTES.md, decode v4,
               // session 7: 1x8192 18.0 us against the split kernels' 22.0, 1x131072 35.1 against 54-55)
    Split,     // the score + select kernels, never the fused one
    FusedTwoLaunches,  // as Auto, but no fused decode call in one cooperative launch: a first kernel (clear or
                       // plan) before every fused one, the path a device partition too small for a cooperative
                       // launch of one CTA per SM takes (kernels/decode_fused.cu); for verification
    Portable,  // CUDA cores only, any sm_80+ GPU; kept for verification and older GPUs
};
// Whether `kind` runs the fused kernels wherever they run (Auto, and FusedTwoLaunches, which differs only inside
// the fused decode call).
constexpr bool fused_kernels_allowed(ScoreKernel kind) {
    return kind == ScoreKernel::Auto || kind == ScoreKernel::FusedTwoLaunches;
}

// ---- top k (topk_kernels.cu) ---------------------------------------------------------------------------
size_t paged_workspace_bytes(const PagedProblem& problem);
// Whether a ragged call runs the fused prefill kernel (sm_90a); otherwise the score + select kernels run.
bool ragged_uses_fused(const RaggedProblem& problem, const DeviceTraits& device, ScoreKernel kernel);
size_t ragged_workspace_bytes(const RaggedProblem& problem, const DeviceTraits& device, ScoreKernel kernel);

// error_flag: device int set to 1 when a row meets bad device-side input (the data rules of
// common/problem.hpp: paged, a seq_len or a block-table entry out of range; ragged, a window out of range);
// that row is written as padding only and nothing outside the inputs is read.
cudaError_t topk_paged(const PagedProblem& problem, const DeviceTraits& device, ScoreKernel kernel, void* workspace,
                       int* error_flag, cudaStream_t stream);
cudaError_t topk_ragged(const RaggedProblem& problem, const DeviceTraits& device, ScoreKernel kernel, void* workspace,
                        int* error_flag, cudaStream_t stream);

// ---- sharded owned cache (multi_kernels.cu; src/gpu/multi/sharding.hpp says who holds which page) -------
// shard_rows builds what rank `rank` of `ranks` computes: row r = b * next_n + j of `problem` becomes
// sequence r (next_n 1) holding the row's visible tokens on pages p with p % ranks == rank, in logical
// order: local_table[r][c] = p / ranks, logical_page[r][c] = the logical page, local_seq_lens[r] = its token
// count. Tables are [rows, problem.max_pages] (a bound on any rank's count); problem.seq_lens and
// block_table are device memory and already checked.
cudaError_t shard_rows(const PagedProblem& problem, int ranks, int rank, int32_t* local_table, int32_t* logical_page,
                       int32_t* local_seq_lens, cudaStream_t stream);
// shard_candidates turns one rank's local results (position order, scores present) into candidate keys over
// logical positions, candidates[r][i] = candidate_key(score, logical_page[r][p / P] * P + p % P) for local
// position p, 0 where the index is -1.
cudaError_t shard_candidates(const int32_t* local_indices, const float* local_scores, const int32_t* logical_page,
                             int32_t max_pages, int page_size, int64_t rows, int topk, uint64_t* candidates,
                             cudaStream_t stream);
// The most ranks whose lists of k candidates merge_shard_candidates takes in one pass, and its inverse:
// the largest k it merges for `ranks` ranks (0: none).
int max_merge_ranks(int topk);
int max_merge_topk(int ranks);
// Merges per row the position-ordered candidate lists of `ranks` ranks ([ranks][rows][topk], 0-padded) into
// the row's top k, written as `problem` asks (index mode through problem.block_table, which is in this
// device's memory, sorted or position order, scores when problem.out.scores). q and k_cache are not read.
// Precondition: ranks <= max_merge_ranks(problem.shape.topk).
cudaError_t merge_shard_candidates(const PagedProblem& problem, const uint64_t* candidates, int ranks,
                                   cudaStream_t stream);

// ---- owned-cache token copies (cache_kernels.cu) --------------------------------------------------------
// Copies in the SPEC page layout (keys then scales per page). Token t of the list goes between global cache
// slot slots[t] and element source_index[t] (gather: t) of the packed keys [*, kHeadDim] / scales arrays.
// `cache` holds the pages p with p % ranks == rank, as local page p / ranks (a whole replica: ranks 1,
// rank 0); tokens on other pages are skipped. The caller has checked the slots and removed duplicates, so
// no two threads write one slot.
cudaError_t scatter_tokens(uint8_t* cache, int64_t page_stride_bytes, int page_size, int ranks, int rank,
                           const int64_t* slots, const int64_t* source_index, int64_t count, const uint8_t* keys,
                           const float* scales, cudaStream_t stream);
cudaError_t gather_tokens(const uint8_t* cache, int64_t page_stride_bytes, int page_size, int ranks, int rank,
                          const int64_t* slots, int64_t count, uint8_t* keys, float* scales, cudaStream_t stream);

}  // namespace dsa::kernels
