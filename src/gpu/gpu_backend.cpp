// The GPU backend. The engine path (dsa_topk_paged / dsa_topk_ragged) runs on the context's first GPU, on
// the caller's stream and workspace: GpuBackend::topk_paged / topk_ragged check that the pointers are that
// GPU's memory (each when it first comes, not on every call) and launch the kernels through kernels/launch.h.
// Owned caches live on every GPU rank of the context (src/gpu/multi): replicated, or sharded by page, each
// computed as plan then run.
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "common/error.hpp"
#include "core/backend.hpp"
#include "gpu/device.hpp"
#include "gpu/multi/cache_storage.hpp"
#include "gpu/multi/rank_group.hpp"
#include "gpu/multi/replicated_topk.hpp"
#include "gpu/multi/sharded_topk.hpp"
#include "gpu/multi/trace.hpp"
#include "kernels/launch.h"

namespace dsa {
namespace {

// DSA_INDEXER_KERNEL=portable | split | fused-two-launches forces one kernel path (to verify one against another);
// unset or anything else (fused, which older scripts set, included), the library chooses
// (kernels::ScoreKernel::Auto): the fused kernels wherever they run.
kernels::ScoreKernel score_kernel_choice() {
    const char* env = std::getenv("DSA_INDEXER_KERNEL");
    if (!env) return kernels::ScoreKernel::Auto;
    if (std::strcmp(env, "portable") == 0) return kernels::ScoreKernel::Portable;
    if (std::strcmp(env, "split") == 0) return kernels::ScoreKernel::Split;
    if (std::strcmp(env, "fused-two-launches") == 0) return kernels::ScoreKernel::FusedTwoLaunches;
    return kernels::ScoreKernel::Auto;
}

// Pointers of an engine-path call must be device memory of the device that runs it.
struct NamedPointer {
    const void* pointer;
    const char* name;
};
void require_on_device(const NamedPointer& p, int device) {
    if (!p.pointer) return;
    cudaPointerAttributes attr;
    const cudaError_t err = cudaPointerGetAttributes(&attr, p.pointer);
    if (err != cudaSuccess) cudaGetLastError();
    const bool ok = err == cudaSuccess && ((attr.type == cudaMemoryTypeDevice && attr.device == device) ||
                                           attr.type == cudaMemoryTypeManaged);
    require(ok, DSA_STATUS_INVALID_ARGUMENT, p.name, " is not device memory of GPU ", device,
            " (the context's first device)");
}

// The N pointers of one engine-path entry point, each looked up only when it differs from the one its argument
// held on the last call that passed: engines pass the same buffers call after call, and a lookup per pointer
// per call is host time an eager caller would pay on every step. (A buffer freed and replaced at the same
// address between two calls is not looked up again.) Calls on a backend are serialised by its context.
template <size_t N>
class DevicePointerChecks {
public:
    void check(const std::array<NamedPointer, N>& pointers, int device) {
        for (size_t i = 0; i < N; ++i)
            if (pointers[i].pointer != passed_[i]) require_on_device(pointers[i], device);
        for (size_t i = 0; i < N; ++i) passed_[i] = pointers[i].pointer;
    }

private:
    std::array<const void*, N> passed_{};
};

class GpuBackend final : public Backend {
public:
    GpuBackend(const std::vector<int>& ids, const ProcessGroup* group) : kernel_(score_kernel_choice()), ranks_(ids, group) {}

    int num_devices() const override { return int(ranks_.size()); }
    bool has_device(int id) const override { return ranks_.has_device(id); }

    size_t paged_workspace_size(const PagedProblem& pb) const override { return kernels::paged_workspace_bytes(pb); }
    size_t ragged_workspace_size(const RaggedProblem& pb) const override {
        return kernels::ragged_workspace_bytes(pb, ranks_.device(0).traits, kernel_);
    }

    void topk_paged(const PagedProblem& pb, void* workspace, size_t, void* stream) override {
        if (pb.rows() == 0) return;
        Device& d = ranks_.device(0);
        DeviceScope scope(d.id);
        paged_pointers_.check({{{pb.q, "inputs->q"}, {pb.k_cache, "inputs->k_cache"}, {pb.weights, "inputs->weights"},
                                  {pb.seq_lens, "inputs->seq_lens"}, {pb.block_table, "inputs->block_table"},
                                  {pb.out.indices, "outputs->indices"}, {pb.out.scores, "outputs->scores"},
                                  {workspace, "workspace"}}},
                                d.id);
        check_cuda(kernels::topk_paged(pb, d.traits, kernel_, workspace, d.error_flag, static_cast<cudaStream_t>(stream)),
                   "launching the paged top-k kernels");
    }

    void topk_ragged(const RaggedProblem& pb, void* workspace, size_t, void* stream) override {
        if (pb.rows() == 0) return;
        Device& d = ranks_.device(0);
        DeviceScope scope(d.id);
        ragged_pointers_.check({{{pb.q, "inputs->q"}, {pb.k, "inputs->k"}, {pb.k_scale, "inputs->k_scale"},
                                   {pb.weights, "inputs->weights"}, {pb.row_start, "inputs->row_start"},
                                   {pb.row_end, "inputs->row_end"}, {pb.out.indices, "outputs->indices"},
                                   {pb.out.scores, "outputs->scores"}, {workspace, "workspace"}}},
                                 d.id);
        check_cuda(kernels::topk_ragged(pb, d.traits, kernel_, workspace, d.error_flag, static_cast<cudaStream_t>(stream)),
                   "launching the ragged top-k kernels");
    }

    void synchronize() override {
        bool flagged = false;
        for (Device* d : ranks_.devices()) flagged |= d->synchronize_and_take_error();
        require(!flagged, DSA_STATUS_DEVICE_INPUT_ERROR,
                "a GPU call met a block-table entry outside [0, num_pages), a seq_len outside [0, max_pages * page_size] "
                "or a ragged window outside [0, num_keys]; those rows were written as padding (-1)");
    }

    std::unique_ptr<CacheStorage> create_cache(const CacheLayout& layout) override {
        return std::make_unique<GpuCacheStorage>(ranks_, layout);
    }

    void topk_cached(const PagedProblem& host, const CacheStorage& storage) override {
        if (host.rows() == 0) return;
        const auto& cache = static_cast<const GpuCacheStorage&>(storage);
        if (cache.layout().sharded && ranks_.world_size() > 1) {
            PhaseTrace trace("dsa_topk sharded");
            const ShardedPlan plan = plan_sharded(ranks_, host, cache);
            run_sharded(ranks_, kernel_, host, plan, trace);
        } else {
            PhaseTrace trace("dsa_topk replicated");
            const ReplicatedPlan plan = plan_replicated(ranks_, host, cache);
            trace.phase("plan", [] {});
            run_replicated(ranks_, kernel_, host, plan, trace);
        }
    }

private:
    kernels::ScoreKernel kernel_;
    RankGroup ranks_;
    DevicePointerChecks<8> paged_pointers_;
    DevicePointerChecks<9> ragged_pointers_;
};

}  // namespace

std::unique_ptr<Backend> make_gpu_backend(const std::vector<int>& devices, const ProcessGroup* group) {
    return std::make_unique<GpuBackend>(devices, group);
}

}  // namespace dsa
