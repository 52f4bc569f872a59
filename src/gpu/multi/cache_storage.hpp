// The owned cache on the GPUs of a context: a whole replica on every local device, or one shard per rank
// (gpu/multi/sharding.hpp), in the SPEC page layout. Tokens reach other ranks through the group's Transport.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/backend.hpp"
#include "gpu/device.hpp"
#include "gpu/multi/rank_group.hpp"

namespace dsa {

class GpuCacheStorage final : public CacheStorage {
public:
    // Zeroed pages on every local device: the whole cache, or this rank's shard.
    GpuCacheStorage(RankGroup& ranks, const CacheLayout& layout);

    const CacheLayout& layout() const { return layout_; }
    int64_t local_pages() const { return local_pages_; }
    const uint8_t* pages(size_t local) const { return pages_[local].get(); }
    // The (ranks, rank) of the kernels' shard view of local device i: a replica is the whole cache.
    int shard_ranks() const { return layout_.sharded ? ranks_.world_size() : 1; }
    int shard_rank(size_t local) const { return layout_.sharded ? ranks_.rank_of(local) : 0; }

    // The last occurrence of each slot is staged once on rank 0 as [slots | source indices | keys | scales],
    // sent to every other rank (gpu/multi/transport.hpp), and scattered there into the pages each rank holds.
    void write(const int64_t* slots, const uint8_t* keys, const float* scales, int64_t n, int memory_device) override;
    // Each rank gathers the tokens it holds into its part of [parts][keys | scales] (one part for a
    // replica, read on the first local device alone; one per rank when sharded, then all-gathered), and
    // every token is taken from the part of the rank holding its page.
    void read(const int64_t* slots, uint8_t* keys, float* scales, int64_t n, int memory_device) const override;

private:
    std::vector<int64_t> slots_on_host(const int64_t* slots, int64_t n, int memory_device) const;

    RankGroup& ranks_;
    std::vector<Device*> devices_;
    CacheLayout layout_;
    int64_t local_pages_ = 0;
    std::vector<OwnedBuffer> pages_;  // per local device: the whole cache, or the rank's shard
};

}  // namespace dsa
