#include "gpu/multi/cache_storage.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "common/constants.hpp"
#include "common/error.hpp"
#include "common/shard_rule.h"
#include "core/host_checks.hpp"
#include "kernels/launch.h"

namespace dsa {

GpuCacheStorage::GpuCacheStorage(RankGroup& ranks, const CacheLayout& layout)
    : ranks_(ranks), devices_(ranks.devices()), layout_(layout) {
    local_pages_ = layout.sharded ? shard_pages(layout.num_pages, ranks.world_size()) : layout.num_pages;
    const size_t bytes = size_t(local_pages_ * layout.page_stride_bytes());
    for (Device* d : devices_) {
        DeviceScope scope(d->id);
        pages_.emplace_back();
        check_cuda(cudaMemsetAsync(pages_.back().ensure(bytes), 0, bytes, d->stream), "zeroing the cache");
        check_cuda(cudaStreamSynchronize(d->stream), "cudaStreamSynchronize");
    }
}

void GpuCacheStorage::write(const int64_t* slots, const uint8_t* keys, const float* scales, int64_t n, int memory_device) {
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
    const size_t lists_at = plan.add(lists.size() * 8), keys_at = plan.add(size_t(n) * kHeadDim),
                 scales_at = plan.add(size_t(n) * kScaleBytes);
    std::vector<void*> payload;
    for (Device* d : devices_) {
        DeviceScope scope(d->id);
        payload.push_back(d->scratch.ensure(plan.total));
    }
    if (ranks_.rank_of(0) == 0) {
        Device& root = *devices_[0];
        DeviceScope scope(root.id);
        uint8_t* base = root.scratch.get();
        check_cuda(cudaMemcpyAsync(base + lists_at, lists.data(), lists.size() * 8, cudaMemcpyHostToDevice, root.stream),
                   "copying slots");
        check_cuda(cudaMemcpyAsync(base + keys_at, keys, size_t(n) * kHeadDim, cudaMemcpyDefault, root.stream), "copying keys");
        check_cuda(cudaMemcpyAsync(base + scales_at, scales, size_t(n) * kScaleBytes, cudaMemcpyDefault, root.stream),
                   "copying scales");
    }
    ranks_.transport().broadcast_from_rank0(plan.total, payload);
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

void GpuCacheStorage::read(const int64_t* slots, uint8_t* keys, float* scales, int64_t n, int memory_device) const {
    const std::vector<int64_t> host_slots = slots_on_host(slots, n, memory_device);
    check_slots(host_slots.data(), n, layout_);
    const int parts = shard_ranks();
    const size_t readers = layout_.sharded ? devices_.size() : 1;
    const size_t part_bytes = size_t(n) * kTokenBytes;
    ScratchPlan plan;
    const size_t slots_at = plan.add(size_t(n) * 8), parts_at = plan.add(part_bytes * size_t(parts));
    std::vector<void*> gathered;
    for (size_t i = 0; i < readers; ++i) {
        Device& d = *devices_[i];
        DeviceScope scope(d.id);
        uint8_t* base = d.scratch.ensure(plan.total);
        gathered.push_back(base + parts_at);
        uint8_t* part = base + parts_at + part_bytes * size_t(shard_rank(i));
        check_cuda(cudaMemcpyAsync(base + slots_at, host_slots.data(), size_t(n) * 8, cudaMemcpyHostToDevice, d.stream),
                   "copying slots");
        check_cuda(kernels::gather_tokens(pages(i), layout_.page_stride_bytes(), layout_.page_size, shard_ranks(),
                                          shard_rank(i), reinterpret_cast<const int64_t*>(base + slots_at), n, part,
                                          reinterpret_cast<float*>(part + size_t(n) * kHeadDim), d.stream),
                   "gather_tokens");
    }
    if (layout_.sharded) ranks_.transport().all_gather(part_bytes, gathered);
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
    std::vector<uint8_t> out_keys(size_t(n) * kHeadDim);
    std::vector<float> out_scales(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
        const int owner = layout_.sharded ? shard_owner(host_slots[size_t(t)] / layout_.page_size, parts) : 0;
        const uint8_t* part = all.data() + part_bytes * size_t(owner);
        std::memcpy(&out_keys[size_t(t) * kHeadDim], part + size_t(t) * kHeadDim, kHeadDim);
        std::memcpy(&out_scales[size_t(t)], part + size_t(n) * kHeadDim + size_t(t) * kScaleBytes, kScaleBytes);
    }
    Device& d = *devices_[0];
    DeviceScope scope(d.id);
    check_cuda(cudaMemcpy(keys, out_keys.data(), out_keys.size(), cudaMemcpyDefault), "copying keys out");
    check_cuda(cudaMemcpy(scales, out_scales.data(), out_scales.size() * kScaleBytes, cudaMemcpyDefault), "copying scales out");
}

std::vector<int64_t> GpuCacheStorage::slots_on_host(const int64_t* slots, int64_t n, int memory_device) const {
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

}  // namespace dsa
