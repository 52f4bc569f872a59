// How bytes move between the ranks of a context, chosen here and nowhere else. Between the GPUs of this
// process: peer copies (NVLink where the GPUs have peer access, else staged through the host by CUDA),
// queued on the streams of the devices involved. When some rank is in another process: NCCL collectives
// over the Communicator. Collectives that every rank joins either way (the sharded read's all-gather) go
// through NCCL, which covers the GPUs of one process too.
#pragma once

#include <cstddef>
#include <vector>

#include "gpu/device.hpp"
#include "gpu/multi/communicator.hpp"

namespace dsa {

class Transport {
public:
    // local: the context's devices in this process (buffers[i] below is on local[i]).
    Transport(const std::vector<Device*>& local, Communicator& comm) : local_(local), comm_(comm) {}

    // Whether results travel through NCCL (some rank is in another process) rather than peer copies.
    bool through_nccl() const { return comm_.spans_processes(); }

    // `bytes` of rank 0's buffer reach every rank's buffer. Through NCCL: one broadcast. In this process
    // (rank 0 is local device 0): device 0's stream drains, then peer copies on each receiver's stream.
    void broadcast_from_rank0(size_t bytes, const std::vector<void*>& buffers) const;

    // An exchange of parts [world][part_bytes] held by every local device, collected on local device `to`.
    // Local device `from` calls send_part on its own thread once its part is queued (in this process: a
    // peer copy of that part on from's stream; through NCCL: nothing yet); collect() then completes the
    // exchange (through NCCL: an all-gather, so every rank holds every part; in this process: nothing).
    void send_part(size_t from, size_t to, size_t part_bytes, const std::vector<void*>& buffers) const;
    void collect(size_t part_bytes, const std::vector<void*>& buffers) const;

    // Every rank's part of [world][part_bytes] to every rank: an NCCL all-gather.
    void all_gather(size_t part_bytes, const std::vector<void*>& buffers) const;
    // Rank r's bytes [offsets[r], offsets[r + 1]) to the same place on every rank (through NCCL only).
    void gather_segments(const std::vector<size_t>& offsets, const std::vector<void*>& buffers) const;

private:
    std::vector<Device*> local_;
    Communicator& comm_;
};

}  // namespace dsa
