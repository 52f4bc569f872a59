// The GPU backend: one Device per GPU of the context in this process, a Communicator over the context's
// NCCL ranks, the engine path on device 0 on the caller's stream, and owned caches replicated on every
// rank or sharded by page over them (core/sharding.hpp says who computes what).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/communicator.hpp"
#include "core/context.hpp"
#include "core/device.hpp"
#include "core/error.hpp"
#include "core/sharding.hpp"
#include "core/trace.hpp"
#include "core/worker_pool.hpp"
#include "kernels/topk_kernels.h"

namespace dsa {
namespace {

// Set by DSA_INDEXER_KERNEL=portable: forces the CUDA-core scoring path (for verification).
kernels::ScoreKernel score_kernel_choice() {
    const char* env = std::getenv("DSA_INDEXER_KERNEL");
    return (env && std::strcmp(env, "portable") == 0) ? kernels::ScoreKernel::Portable : kernels::ScoreKernel::Auto;
}

// Pointers of an engine-path call must be device memory of the device that runs it.
struct NamedPointer {
    const void* pointer;
    const char* name;
};
void require_on_device(std::initializer_list<NamedPointer> pointers, int device) {
    for (const NamedPointer& p : pointers) {
        if (!p.pointer) continue;
        cudaPointerAttributes attr;
        const cudaError_t err = cudaPointerGetAttributes(&attr, p.pointer);
        if (err != cudaSuccess) cudaGetLastError();
        const bool ok = err == cudaSuccess && ((attr.type == cudaMemoryTypeDevice && attr.device == device) ||
                                               attr.type == cudaMemoryTypeManaged);
        require(ok, DSA_STATUS_INVALID_ARGUMENT, p.name, " is not device memory of GPU ", device,
                " (the context's first device)");
    }
}

class GpuCacheStorage final : public CacheStorage {
public:
    GpuCacheStorage(std::vector<Device*> devices, Communicator& comm, const CacheLayout& layout)
        : devices_(std::move(devices)), comm_(comm), layout_(layout) {
        local_pages_ = layout.sharded ? shard_pages(layout.num_pages, comm.world_size()) : layout.num_pages;
        const size_t bytes = size_t(local_pages_ * layout.page_stride_bytes());
        for (Device* d : devices_) {
            DeviceScope scope(d->id);
            pages_.emplace_back();
            check_cuda(cudaMemsetAsync(pages_.back().ensure(bytes), 0, bytes, d->stream), "zeroing the cache");
            check_cuda(cudaStreamSynchronize(d->stream), "cudaStreamSynchronize");
        }
    }

    const CacheLayout& layout() const { return layout_; }
    int64_t local_pages() const { return local_pages_; }
    const uint8_t* pages(size_t local) const { return pages_[local].get(); }
    // The (ranks, rank) of the kernels' shard view of local device i: a replica is the whole cache.
    int shard_ranks() const { return layout_.sharded ? comm_.world_size() : 1; }
    int shard_rank(size_t local) const { return layout_.sharded ? comm_.rank_of(local) : 0; }

    // The last occurrence of each slot is staged once on rank 0 as [slots | source indices | keys | scales],
    // sent to every other rank (peer copies to the GPUs of this process, one NCCL broadcast group across
    // processes), and scattered there into the pages each rank holds.
    void write(const int64_t* slots, const uint8_t* keys, const float* scales, int64_t n, int memory_device) override {
        const std::vector<int64_t> host_slots = slots_on_host(slots, n, memory_device);
        check_slots(host_slots.data(), n, layout_);
        std::vector<int64_t> order(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), int64_t(0));
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t a, int64_t b) { return host_slots[size_t(a)] < host_slots[size_t(b)]; });
        std::vector<int64_t> sources;  // the last occurrence of each distinct slot, in slot order
        for (size_t i = 0; i < order.size(); ++i)
            if (i + 1 == order.size() || host_slots[size_t(order[i + 1])] != host_slots[size_t(order[i])])
                sources.push_back(order[i]);
        const int64_t count = int64_t(sources.size());
        std::vector<int64_t> lists(2 * sources.size());  // [slots | their source indices]
        for (size_t i = 0; i < sources.size(); ++i) {
            lists[i] = host_slots[size_t(sources[i])];
            lists[sources.size() + i] = sources[i];
        }
        ScratchPlan plan;
        const size_t lists_at = plan.add(lists.size() * 8), keys_at = plan.add(size_t(n) * 128),
                     scales_at = plan.add(size_t(n) * 4);
        std::vector<void*> payload;
        for (Device* d : devices_) {
            DeviceScope scope(d->id);
            payload.push_back(d->scratch.ensure(plan.total));
        }
        if (comm_.rank_of(0) == 0) {
            Device& root = *devices_[0];
            DeviceScope scope(root.id);
            uint8_t* base = root.scratch.get();
            check_cuda(cudaMemcpyAsync(base + lists_at, lists.data(), lists.size() * 8, cudaMemcpyHostToDevice, root.stream),
                       "copying slots");
            check_cuda(cudaMemcpyAsync(base + keys_at, keys, size_t(n) * 128, cudaMemcpyDefault, root.stream), "copying keys");
            check_cuda(cudaMemcpyAsync(base + scales_at, scales, size_t(n) * 4, cudaMemcpyDefault, root.stream),
                       "copying scales");
        }
        if (comm_.spans_processes()) {
            comm_.broadcast(0, plan.total, payload);
        } else if (devices_.size() > 1) {  // rank 0 is local device 0: peer copies, each on its receiver's stream
            DeviceScope scope(devices_[0]->id);
            check_cuda(cudaStreamSynchronize(devices_[0]->stream), "cudaStreamSynchronize");
            for (size_t i = 1; i < devices_.size(); ++i)
                check_cuda(cudaMemcpyPeerAsync(payload[i], devices_[i]->id, payload[0], devices_[0]->id, plan.total,
                                               devices_[i]->stream),
                           "copying tokens to a replica");
        }
        for (size_t i = 0; i < devices_.size(); ++i) {
            Device& d = *devices_[i];
            DeviceScope scope(d.id);
            auto* base = static_cast<uint8_t*>(payload[i]);
            const auto* dev_lists = reinterpret_cast<const int64_t*>(base + lists_at);
            check_cuda(kernels::scatter_tokens(pages_[i].get(), layout_.page_stride_bytes(),
                                               layout_.page_size, shard_ranks(), shard_rank(i), dev_lists,
                                               dev_lists + count, count, base + keys_at,
                                               reinterpret_cast<const float*>(base + scales_at), d.stream),
                       "scatter_tokens");
        }
        for (Device* d : devices_) {
            DeviceScope scope(d->id);
            check_cuda(cudaStreamSynchronize(d->stream), "cudaStreamSynchronize");
        }
    }

    // Each rank gathers the tokens it holds into its part of [parts][keys | scales] (one part for a
    // replica, read on the first local device alone; one per rank when sharded, then all-gathered), and
    // every token is taken from the part of the rank holding its page.
    void read(const int64_t* slots, uint8_t* keys, float* scales, int64_t n, int memory_device) const override {
        const std::vector<int64_t> host_slots = slots_on_host(slots, n, memory_device);
        check_slots(host_slots.data(), n, layout_);
        const int parts = shard_ranks();
        const size_t readers = layout_.sharded ? devices_.size() : 1;
        const size_t part_bytes = size_t(n) * 132;
        ScratchPlan plan;
        const size_t slots_at = plan.add(size_t(n) * 8), parts_at = plan.add(part_bytes * size_t(parts));
        std::vector<void*> gathered;
        for (size_t i = 0; i < readers; ++i) {
            Device& d = *devices_[i];
            DeviceScope scope(d.id);
            uint8_t* base = d.scratch.ensure(plan.total);
            gathered.push_back(base + parts_at);
            uint8_t* part = base + parts_at + part_bytes * size_t(layout_.sharded ? comm_.rank_of(i) : 0);
            check_cuda(cudaMemcpyAsync(base + slots_at, host_slots.data(), size_t(n) * 8, cudaMemcpyHostToDevice, d.stream),
                       "copying slots");
            check_cuda(kernels::gather_tokens(pages(i), layout_.page_stride_bytes(), layout_.page_size, shard_ranks(),
                                              shard_rank(i), reinterpret_cast<const int64_t*>(base + slots_at), n, part,
                                              reinterpret_cast<float*>(part + size_t(n) * 128), d.stream),
                       "gather_tokens");
        }
        if (layout_.sharded) comm_.all_gather(part_bytes, gathered);
        std::vector<uint8_t> all(part_bytes * size_t(parts));
        {
            Device& d = *devices_[0];
            DeviceScope scope(d.id);
            check_cuda(cudaMemcpyAsync(all.data(), gathered[0], all.size(), cudaMemcpyDeviceToHost, d.stream),
                       "copying tokens back");
            for (size_t i = 0; i < readers; ++i) {
                DeviceScope each(devices_[i]->id);
                check_cuda(cudaStreamSynchronize(devices_[i]->stream), "cudaStreamSynchronize");
            }
        }
        std::vector<uint8_t> out_keys(size_t(n) * 128);
        std::vector<float> out_scales(static_cast<size_t>(n));
        for (int64_t t = 0; t < n; ++t) {
            const int owner = layout_.sharded ? shard_owner(host_slots[size_t(t)] / layout_.page_size, parts) : 0;
            const uint8_t* part = all.data() + part_bytes * size_t(owner);
            std::memcpy(&out_keys[size_t(t) * 128], part + size_t(t) * 128, 128);
            std::memcpy(&out_scales[size_t(t)], part + size_t(n) * 128 + size_t(t) * 4, 4);
        }
        Device& d = *devices_[0];
        DeviceScope scope(d.id);
        check_cuda(cudaMemcpy(keys, out_keys.data(), out_keys.size(), cudaMemcpyDefault), "copying keys out");
        check_cuda(cudaMemcpy(scales, out_scales.data(), out_scales.size() * 4, cudaMemcpyDefault), "copying scales out");
    }

private:
    std::vector<int64_t> slots_on_host(const int64_t* slots, int64_t n, int memory_device) const {
        const bool known = memory_device == DSA_MEMORY_HOST ||
                           std::any_of(devices_.begin(), devices_.end(), [&](Device* d) { return d->id == memory_device; });
        require(known, DSA_STATUS_INVALID_ARGUMENT, "memory_device ", memory_device,
                " is neither DSA_MEMORY_HOST nor a device of the context in this process");
        std::vector<int64_t> host(static_cast<size_t>(n));
        if (memory_device == DSA_MEMORY_HOST) {
            std::copy(slots, slots + n, host.begin());
        } else {
            DeviceScope scope(memory_device);
            check_cuda(cudaMemcpy(host.data(), slots, size_t(n) * 8, cudaMemcpyDefault), "copy slots to host");
        }
        return host;
    }

    std::vector<Device*> devices_;
    Communicator& comm_;
    CacheLayout layout_;
    int64_t local_pages_ = 0;
    std::vector<OwnedBuffer> pages_;  // per local device: the whole cache, or the rank's shard
};

class GpuBackend final : public Backend {
public:
    GpuBackend(const std::vector<int>& ids, const ProcessGroup* group) : kernel_(score_kernel_choice()) {
        for (int id : ids) devices_.push_back(std::make_unique<Device>(id));
        // Peer access lets results move between local GPUs without the host; where a pair has none, CUDA
        // stages those copies through the host instead.
        for (auto& a : devices_)
            for (auto& b : devices_) {
                int can = 0;
                if (a == b || cudaDeviceCanAccessPeer(&can, a->id, b->id) != cudaSuccess || !can) continue;
                DeviceScope scope(a->id);
                if (cudaDeviceEnablePeerAccess(b->id, 0) != cudaSuccess) cudaGetLastError();  // already enabled
            }
        comm_ = std::make_unique<Communicator>(local_devices(), group);
        workers_ = std::make_unique<WorkerPool>(devices_.size() - 1);
    }

    ~GpuBackend() override {
        for (auto& d : devices_) {
            int previous = 0;
            cudaGetDevice(&previous);
            cudaSetDevice(d->id);
            cudaDeviceSynchronize();
            cudaSetDevice(previous);
        }
    }

    int num_devices() const override { return int(devices_.size()); }
    bool has_device(int id) const override {
        return std::any_of(devices_.begin(), devices_.end(), [&](const auto& d) { return d->id == id; });
    }

    size_t paged_workspace_size(const PagedProblem& pb) const override { return kernels::paged_workspace_bytes(pb); }
    size_t ragged_workspace_size(const RaggedProblem& pb) const override { return kernels::ragged_workspace_bytes(pb); }

    void topk_paged(const PagedProblem& pb, void* workspace, size_t, void* stream) override {
        if (pb.rows() == 0) return;
        Device& d = *devices_[0];
        DeviceScope scope(d.id);
        require_on_device({{pb.q, "inputs->q"}, {pb.k_cache, "inputs->k_cache"}, {pb.weights, "inputs->weights"},
                           {pb.seq_lens, "inputs->seq_lens"}, {pb.block_table, "inputs->block_table"},
                           {pb.out.indices, "outputs->indices"}, {pb.out.scores, "outputs->scores"},
                           {workspace, "workspace"}},
                          d.id);
        check_cuda(kernels::topk_paged(pb, d.traits, kernel_, workspace, d.error_flag, static_cast<cudaStream_t>(stream)),
                   "launching the paged top-k kernels");
    }

    void topk_ragged(const RaggedProblem& pb, void* workspace, size_t, void* stream) override {
        if (pb.rows() == 0) return;
        Device& d = *devices_[0];
        DeviceScope scope(d.id);
        require_on_device({{pb.q, "inputs->q"}, {pb.k, "inputs->k"}, {pb.k_scale, "inputs->k_scale"},
                           {pb.weights, "inputs->weights"}, {pb.row_start, "inputs->row_start"},
                           {pb.row_end, "inputs->row_end"}, {pb.out.indices, "outputs->indices"},
                           {pb.out.scores, "outputs->scores"}, {workspace, "workspace"}},
                          d.id);
        check_cuda(kernels::topk_ragged(pb, d.traits, kernel_, workspace, d.error_flag, static_cast<cudaStream_t>(stream)),
                   "launching the ragged top-k kernels");
    }

    void synchronize() override {
        bool flagged = false;
        for (auto& d : devices_) flagged |= d->synchronize_and_take_error();
        require(!flagged, DSA_STATUS_DEVICE_INPUT_ERROR,
                "a GPU call met a block-table entry outside [0, num_pages), a seq_len outside [0, max_pages * page_size] "
                "or a ragged window outside [0, num_keys]; those rows were written as padding (-1)");
    }

    std::unique_ptr<CacheStorage> create_cache(const CacheLayout& layout) override {
        return std::make_unique<GpuCacheStorage>(local_devices(), *comm_, layout);
    }

    void topk_cached(const PagedProblem& host, const CacheStorage& storage) override {
        if (host.rows() == 0) return;
        const auto& cache = static_cast<const GpuCacheStorage&>(storage);
        if (cache.layout().sharded && comm_->world_size() > 1) topk_sharded(host, cache);
        else topk_replicated(host, cache);
    }

private:
    std::vector<Device*> local_devices() const {
        std::vector<Device*> out;
        for (const auto& d : devices_) out.push_back(d.get());
        return out;
    }

    // The local device that delivers results: the named output device, or the first.
    size_t output_index(const PagedProblem& host) const {
        for (size_t i = 0; i < devices_.size(); ++i)
            if (devices_[i]->id == host.output_device) return i;
        return 0;
    }

    // The inputs of a range of `sequences` sequences as one block, [q | weights | seq_lens | block table
    // (dense rows of max_pages)], laid out alike in pinned host memory and on a device, so that a block
    // reaches its device in one DMA.
    struct InputBlock {
        size_t q_at = 0, weights_at = 0, lens_at = 0, table_at = 0, bytes = 0;
        size_t row_bytes_q = 0, row_bytes_w = 0, width = 0;
        int next_n = 1;

        InputBlock(const PagedProblem& host, int32_t sequences) : next_n(host.shape.next_n) {
            row_bytes_q = size_t(host.shape.num_heads) * 128;
            row_bytes_w = size_t(host.shape.num_heads) * 4;
            width = size_t(host.max_pages);
            const size_t rows = size_t(sequences) * size_t(next_n);
            ScratchPlan plan;
            q_at = plan.add(rows * row_bytes_q);
            weights_at = plan.add(rows * row_bytes_w);
            lens_at = plan.add(size_t(sequences) * 4);
            table_at = plan.add(size_t(sequences) * width * 4);
            bytes = plan.total;
        }

        // Host memcpy of the caller's sequences [first + from, first + to) into a block at `block` that holds
        // sequences from `first` on.
        void stage(uint8_t* block, const PagedProblem& host, int32_t first, int32_t from, int32_t to) const {
            if (to <= from) return;
            const size_t r0 = size_t(from) * next_n, rows = size_t(to - from) * next_n;
            const size_t src_row = size_t(first + from) * next_n;
            std::memcpy(block + q_at + r0 * row_bytes_q, host.q + src_row * row_bytes_q, rows * row_bytes_q);
            std::memcpy(block + weights_at + r0 * row_bytes_w, reinterpret_cast<const uint8_t*>(host.weights) +
                                                                   src_row * row_bytes_w, rows * row_bytes_w);
            std::memcpy(block + lens_at + size_t(from) * 4, host.seq_lens + first + from, size_t(to - from) * 4);
            if (width == 0) return;
            for (int32_t b = from; b < to; ++b)
                std::memcpy(block + table_at + size_t(b) * width * 4,
                            host.block_table + int64_t(first + b) * host.block_table_stride, width * 4);
        }

        // Points pb's inputs at a block in device memory.
        void bind(PagedProblem& pb, uint8_t* block) const {
            pb.q = block + q_at;
            pb.weights = reinterpret_cast<const float*>(block + weights_at);
            pb.seq_lens = reinterpret_cast<const int32_t*>(block + lens_at);
            pb.block_table = reinterpret_cast<const int32_t*>(block + table_at);
            pb.block_table_stride = int64_t(width);
        }
    };

    // Host outputs pass through pinned memory after the input blocks: [indices | scores] of all rows.
    struct OutputStage {
        size_t indices_at = 0, scores_at = 0, bytes = 0;
        OutputStage(const PagedProblem& host, size_t after) {
            const size_t values = size_t(host.rows()) * size_t(host.shape.topk);
            ScratchPlan plan;
            plan.total = after;
            indices_at = plan.add(values * 4);
            scores_at = plan.add(values * 4);
            bytes = plan.total;
        }
    };

    // Copies rows [row0, row0 + rows) of device results `from` (laid out for all rows) to the caller's
    // outputs, through pinned memory for host outputs, and waits for them.
    static void deliver(Device& d, const PagedProblem& host, const TopkOutputs& from, int64_t row0, int64_t rows,
                        uint8_t* pinned, const OutputStage& st) {
        const size_t offset = size_t(row0 * host.shape.topk), count = size_t(rows * host.shape.topk);
        const bool to_host = host.output_device == DSA_MEMORY_HOST;
        const std::pair<void*, const void*> arrays[] = {{host.out.indices, from.indices}, {host.out.scores, from.scores}};
        const size_t stage_at[] = {st.indices_at, st.scores_at};
        for (int a = 0; a < 2 && count > 0; ++a) {
            if (!arrays[a].first) continue;
            auto* to = static_cast<uint8_t*>(to_host ? pinned + stage_at[a] : arrays[a].first) + offset * 4;
            check_cuda(cudaMemcpyAsync(to, static_cast<const uint8_t*>(arrays[a].second) + offset * 4, count * 4,
                                       cudaMemcpyDefault, d.stream),
                       "copying results out");
        }
        check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");
        if (!to_host) return;
        for (int a = 0; a < 2 && count > 0; ++a)
            if (arrays[a].first)
                std::memcpy(static_cast<uint8_t*>(arrays[a].first) + offset * 4, pinned + stage_at[a] + offset * 4, count * 4);
    }

    // While tracing: waits for every local device, so the phase that queued GPU work is charged for it.
    void wait_all() {
        for (auto& d : devices_) {
            DeviceScope scope(d->id);
            check_cuda(cudaStreamSynchronize(d->stream), "cudaStreamSynchronize");
        }
    }

    // Rows sharded: rank q computes sequences [bounds[q], bounds[q + 1]) on its replica into the rows of a
    // full-size result; local results go straight to the caller, and ranks in other processes send theirs
    // through NCCL (every rank then holds the whole result). Each local device stages its own sequences
    // in pinned memory on its own host thread and uploads them in one DMA.
    void topk_replicated(const PagedProblem& host, const GpuCacheStorage& cache) {
        PhaseTrace trace("dsa_topk replicated");
        const int64_t k = host.shape.topk, next_n = host.shape.next_n;
        const std::vector<int32_t> bounds = split_sequences(host, comm_->world_size());
        const size_t local = devices_.size();
        struct Part {
            PagedProblem pb;
            int32_t b0 = 0, b1 = 0;
            InputBlock block;
            size_t pinned_at = 0;
            uint8_t* device_block = nullptr;
            TopkOutputs full;  // [all rows, k] on this device
            uint8_t* workspace = nullptr;
        };
        std::vector<Part> parts;
        size_t pinned_bytes = 0;
        for (size_t i = 0; i < local; ++i) {
            const int32_t b0 = bounds[size_t(comm_->rank_of(i))], b1 = bounds[size_t(comm_->rank_of(i)) + 1];
            parts.push_back(Part{host, b0, b1, InputBlock(host, b1 - b0), pinned_bytes, nullptr, {}, nullptr});
            pinned_bytes += parts.back().block.bytes;
        }
        const OutputStage out_stage(host, pinned_bytes);
        uint8_t* pinned = pinned_.ensure(out_stage.bytes);
        for (size_t i = 0; i < local; ++i) {  // plans and allocations first: nothing can fail mid-collective
            Device& d = *devices_[i];
            Part& part = parts[i];
            PagedProblem& pb = part.pb;
            pb.batch_size = part.b1 - part.b0;
            pb.num_pages = cache.local_pages();
            pb.k_cache = cache.pages(i);
            ScratchPlan plan;
            const size_t block_at = plan.add(part.block.bytes), idx_at = plan.add(size_t(host.rows() * k * 4)),
                         score_at = plan.add(size_t(host.rows() * k * 4)),
                         work_at = plan.add(kernels::paged_workspace_bytes(pb));
            DeviceScope scope(d.id);
            uint8_t* base = d.scratch.ensure(plan.total);
            part.device_block = base + block_at;
            part.block.bind(pb, part.device_block);
            part.full.indices = reinterpret_cast<int32_t*>(base + idx_at);
            part.full.scores = reinterpret_cast<float*>(base + score_at);
            pb.out.indices = part.full.indices + int64_t(part.b0) * next_n * k;
            pb.out.scores = host.out.scores ? part.full.scores + int64_t(part.b0) * next_n * k : nullptr;
            part.workspace = base + work_at;
        }
        trace.phase("plan", [] {});
        const bool gather = comm_->spans_processes();
        workers_->run(local, [&](size_t i) {
            Device& d = *devices_[i];
            DeviceScope scope(d.id);
            const Part& part = parts[i];
            PhaseTrace device_trace(i == 0 ? "dsa_topk replicated, device 0" : nullptr);
            const auto sync = [&] { check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize"); };
            part.block.stage(pinned + part.pinned_at, host, part.b0, 0, part.b1 - part.b0);
            device_trace.phase("stage", [] {});
            check_cuda(cudaMemcpyAsync(part.device_block, pinned + part.pinned_at, part.block.bytes,
                                       cudaMemcpyHostToDevice, d.stream),
                       "copying inputs to the device");
            device_trace.phase("upload", sync);
            if (part.pb.rows() > 0)
                check_cuda(kernels::topk_paged(part.pb, d.traits, kernel_, part.workspace, d.error_flag, d.stream),
                           "launching the paged top-k kernels");
            device_trace.phase("compute", sync);
            if (!gather) deliver(d, host, part.full, int64_t(part.b0) * next_n, part.pb.rows(), pinned, out_stage);
            device_trace.phase(host.output_device == DSA_MEMORY_HOST ? "deliver to host" : "deliver to a GPU", [] {});
        });
        trace.phase(gather ? "stage+compute" : "stage+compute+deliver", [&] { wait_all(); });
        if (!gather) return;
        // Every rank holds one device here: rank q's rows arrive from rank q, then the whole result goes out.
        std::vector<size_t> offsets;
        for (int32_t b : bounds) offsets.push_back(size_t(int64_t(b) * next_n * k * 4));
        comm_->gather_segments(offsets, {parts[0].full.indices});
        if (host.out.scores) comm_->gather_segments(offsets, {parts[0].full.scores});
        trace.phase("gather", [&] { wait_all(); });
        deliver(*devices_[0], host, parts[0].full, 0, host.rows(), pinned, out_stage);
        trace.phase("deliver", [] {});
    }

    // Pages sharded: every rank scores every row over its own pages (kernels::shard_rows builds that problem
    // on the device from the block table), turns its top k into candidates over logical positions, the
    // candidates reach the output device (peer copies in this process, an NCCL all-gather across
    // processes), and it merges them into the global top k, which equals one GPU's since ties rank by
    // position on every rank alike.
    void topk_sharded(const PagedProblem& host, const GpuCacheStorage& cache) {
        PhaseTrace trace("dsa_topk sharded");
        const int ranks = comm_->world_size();
        const int k = host.shape.topk;
        require(ranks <= kernels::max_merge_ranks(k), DSA_STATUS_NOT_IMPLEMENTED, "a sharded cache over ", ranks,
                " GPUs merges up to ", kernels::max_merge_ranks(k), " candidate lists of k = ", k,
                " in this version: use k <= ", 16384 / ranks, " or a replicated cache");
        const int64_t rows = host.rows();
        const size_t local = devices_.size(), out_index = output_index(host);
        const bool spans = comm_->spans_processes();
        const InputBlock block(host, host.batch_size);  // every device needs every input
        const OutputStage out_stage(host, block.bytes);
        uint8_t* pinned = pinned_.ensure(out_stage.bytes);
        struct Part {
            PagedProblem full;   // the original rows, on this device (merge and index mapping read it)
            PagedProblem shard;  // the rank's problem over its pages: one sequence per row
            uint8_t* device_block = nullptr;
            int32_t* logical_page = nullptr;
            uint64_t* candidates = nullptr;  // [ranks][rows][k]
            uint8_t* workspace = nullptr;
        };
        std::vector<Part> parts(local);
        std::vector<void*> candidate_buffers;
        for (size_t i = 0; i < local; ++i) {  // plans and allocations first: nothing can fail mid-collective
            Device& d = *devices_[i];
            PagedProblem shard = host;
            shard.shape.next_n = 1;
            shard.shape.index_mode = IndexMode::PagedLogical;
            shard.shape.sorted = false;
            shard.batch_size = int32_t(rows);
            shard.block_table_stride = host.max_pages;
            shard.num_pages = cache.local_pages();
            shard.k_cache = cache.pages(i);
            ScratchPlan plan;
            const size_t block_at = plan.add(block.bytes), shard_len_at = plan.add(size_t(rows) * 4),
                         shard_table_at = plan.add(size_t(rows * host.max_pages) * 4),
                         logical_at = plan.add(size_t(rows * host.max_pages) * 4),
                         idx_at = plan.add(size_t(rows * k) * 4), score_at = plan.add(size_t(rows * k) * 4),
                         out_idx_at = plan.add(size_t(rows * k) * 4), out_score_at = plan.add(size_t(rows * k) * 4),
                         cand_at = plan.add(size_t(ranks) * size_t(rows * k) * 8),
                         work_at = plan.add(kernels::paged_workspace_bytes(shard));
            DeviceScope scope(d.id);
            uint8_t* base = d.scratch.ensure(plan.total);
            Part& part = parts[i];
            part.device_block = base + block_at;
            part.full = host;
            block.bind(part.full, part.device_block);
            part.full.out.indices = reinterpret_cast<int32_t*>(base + out_idx_at);
            part.full.out.scores = host.out.scores ? reinterpret_cast<float*>(base + out_score_at) : nullptr;
            shard.q = part.full.q;
            shard.weights = part.full.weights;
            shard.seq_lens = reinterpret_cast<const int32_t*>(base + shard_len_at);
            shard.block_table = reinterpret_cast<const int32_t*>(base + shard_table_at);
            shard.out.indices = reinterpret_cast<int32_t*>(base + idx_at);
            shard.out.scores = reinterpret_cast<float*>(base + score_at);
            part.shard = shard;
            part.logical_page = reinterpret_cast<int32_t*>(base + logical_at);
            part.candidates = reinterpret_cast<uint64_t*>(base + cand_at);
            part.workspace = base + work_at;
            candidate_buffers.push_back(part.candidates);
        }
        // The local devices' threads stage a share of the sequences each, then each device uploads the block.
        workers_->run(local, [&](size_t i) {
            block.stage(pinned, host, 0, int32_t(int64_t(host.batch_size) * int64_t(i) / int64_t(local)),
                        int32_t(int64_t(host.batch_size) * int64_t(i + 1) / int64_t(local)));
        });
        trace.phase("plan+stage", [] {});
        workers_->run(local, [&](size_t i) {
            Device& d = *devices_[i];
            DeviceScope scope(d.id);
            const Part& part = parts[i];
            const int rank = comm_->rank_of(i);
            PhaseTrace device_trace(i == 0 ? "dsa_topk sharded, device 0" : nullptr);
            const auto sync = [&] { check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize"); };
            check_cuda(cudaMemcpyAsync(part.device_block, pinned, block.bytes, cudaMemcpyHostToDevice, d.stream),
                       "copying inputs to the device");
            device_trace.phase("upload", sync);
            check_cuda(kernels::shard_rows(part.full, ranks, rank, const_cast<int32_t*>(part.shard.block_table),
                                           part.logical_page, const_cast<int32_t*>(part.shard.seq_lens), d.stream),
                       "launching the shard planning");
            device_trace.phase("shard_rows", sync);
            check_cuda(kernels::topk_paged(part.shard, d.traits, kernel_, part.workspace, d.error_flag, d.stream),
                       "launching the paged top-k kernels");
            device_trace.phase("topk", sync);
            uint64_t* mine = part.candidates + size_t(rank) * size_t(rows * k);
            check_cuda(kernels::shard_candidates(part.shard.out.indices, part.shard.out.scores, part.logical_page,
                                                 host.max_pages, host.shape.page_size, rows, k, mine, d.stream),
                       "launching the candidate conversion");
            // Ranks in this process hand their candidates to the output device directly (NVLink when the
            // GPUs have peer access); ranks in other processes take part in the all-gather below.
            if (!spans && i != out_index)
                check_cuda(cudaMemcpyPeerAsync(parts[out_index].candidates + size_t(rank) * size_t(rows * k),
                                               devices_[out_index]->id, mine, d.id, size_t(rows * k) * 8, d.stream),
                           "copying candidates to the output device");
            sync();
        });
        trace.phase("upload+compute+exchange", [] {});
        if (spans) {
            comm_->all_gather(size_t(rows * k) * 8, candidate_buffers);
            trace.phase("all-gather", [&] { wait_all(); });
        }
        Device& out = *devices_[out_index];
        {
            DeviceScope scope(out.id);
            const Part& part = parts[out_index];
            check_cuda(kernels::merge_shard_candidates(part.full, part.candidates, ranks, out.stream),
                       "launching the candidate merge");
            trace.phase("merge", [&] { wait_all(); });
            deliver(out, host, part.full.out, 0, rows, pinned, out_stage);
        }
        trace.phase("deliver", [] {});
    }

    kernels::ScoreKernel kernel_;
    std::vector<std::unique_ptr<Device>> devices_;
    std::unique_ptr<Communicator> comm_;
    OwnedBuffer pinned_{OwnedBuffer::Kind::PinnedHost};  // host stage of the owned-cache calls (the context serialises them)
    std::unique_ptr<WorkerPool> workers_;  // drives devices 1.. of owned-cache calls in parallel with device 0
};

}  // namespace

std::unique_ptr<Backend> make_gpu_backend(const std::vector<int>& devices, const ProcessGroup* group) {
    return std::make_unique<GpuBackend>(devices, group);
}

}  // namespace dsa
