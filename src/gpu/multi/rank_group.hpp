// The GPUs of a context in this process, as ranks of the context's world: one Device each (with peer access
// between them), the Communicator over every rank, the Transport that moves bytes between ranks, the worker
// threads that drive devices 1.. in parallel with device 0, and the pinned host stage of the owned-cache
// calls. A context of one GPU is a group of one: rank 0 of a world of 1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/backend.hpp"
#include "gpu/device.hpp"
#include "gpu/multi/communicator.hpp"
#include "gpu/multi/transport.hpp"
#include "gpu/multi/worker_pool.hpp"

namespace dsa {

class RankGroup {
public:
    // group: null for a context whose ranks are all in this process.
    RankGroup(const std::vector<int>& device_ids, const ProcessGroup* group);
    ~RankGroup();  // waits for every device first
    RankGroup(const RankGroup&) = delete;
    RankGroup& operator=(const RankGroup&) = delete;

    size_t size() const { return devices_.size(); }
    Device& device(size_t local) const { return *devices_[local]; }
    const std::vector<Device*>& devices() const { return raw_; }
    bool has_device(int id) const;
    // The local index of the GPU with this id; `fallback` when it is none of them.
    size_t index_of(int id, size_t fallback) const;

    int world_size() const { return comm_->world_size(); }
    int rank_of(size_t local) const { return comm_->rank_of(local); }
    Communicator& comm() const { return *comm_; }
    const Transport& transport() const { return *transport_; }
    WorkerPool& workers() const { return *workers_; }
    // The pinned host stage, at least `bytes` long (the context serialises its users).
    uint8_t* pinned(size_t bytes) { return pinned_.ensure(bytes); }

    // Waits for every local device's stream.
    void wait_all() const;

private:
    std::vector<std::unique_ptr<Device>> devices_;
    std::vector<Device*> raw_;
    std::unique_ptr<Communicator> comm_;
    std::unique_ptr<Transport> transport_;
    OwnedBuffer pinned_{OwnedBuffer::Kind::PinnedHost};
    std::unique_ptr<WorkerPool> workers_;
};

}  // namespace dsa
