// The NCCL ranks of a GPU context. A context whose GPUs are all in this process numbers them 0 .. G-1
// (rank = position in its device list) and, with more than one, holds one communicator over them
// (ncclCommInitAll). A context spanning processes has one local GPU holding the rank it was created with.
// A world of one needs no NCCL: every collective is then the identity.
//
// Collectives are enqueued on each local device's stream inside one NCCL group (so one thread may drive
// all local ranks), in place, and are ordered with the other work on those streams.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <vector>

#include "core/backend.hpp"
#include "gpu/device.hpp"

namespace dsa {

class Communicator {
public:
    // local: the context's devices in this process; group: null for a single-process context.
    Communicator(const std::vector<Device*>& local, const ProcessGroup* group);
    ~Communicator();
    Communicator(const Communicator&) = delete;
    Communicator& operator=(const Communicator&) = delete;

    int world_size() const { return world_size_; }
    int rank_of(size_t local_index) const { return first_rank_ + int(local_index); }
    // Whether some ranks are in other processes (results then travel through NCCL, not local copies).
    bool spans_processes() const { return spans_processes_; }

    // buffers[i]: a buffer on local device i. broadcast: `bytes` of root's buffer to every rank's.
    void broadcast(int root, size_t bytes, const std::vector<void*>& buffers);
    // all_gather: every buffer is [world][bytes_per_rank]; rank r's part r goes to part r of every rank.
    void all_gather(size_t bytes_per_rank, const std::vector<void*>& buffers);
    // gather_segments: buffers are [offsets.back()] bytes; rank r's bytes [offsets[r], offsets[r + 1]) go
    // to the same place on every rank (an all-gather of uneven parts: one broadcast per rank, one group).
    void gather_segments(const std::vector<size_t>& offsets, const std::vector<void*>& buffers);

private:
    struct Comms;
    std::vector<Device*> local_;
    int first_rank_ = 0;
    int world_size_ = 1;
    bool spans_processes_ = false;
    std::unique_ptr<Comms> comms_;  // one NCCL communicator per local device; null in a world of one
};

}  // namespace dsa
