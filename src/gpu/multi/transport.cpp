#include "gpu/multi/transport.hpp"

#include <cstdint>

namespace dsa {

void Transport::broadcast_from_rank0(size_t bytes, const std::vector<void*>& buffers) const {
    if (through_nccl()) {
        comm_.broadcast(0, bytes, buffers);
        return;
    }
    if (local_.size() < 2) return;
    DeviceScope scope(local_[0]->id);
    check_cuda(cudaStreamSynchronize(local_[0]->stream), "cudaStreamSynchronize");
    for (size_t i = 1; i < local_.size(); ++i)
        check_cuda(cudaMemcpyPeerAsync(buffers[i], local_[i]->id, buffers[0], local_[0]->id, bytes, local_[i]->stream),
                   "copying to a replica");
}

void Transport::send_part(size_t from, size_t to, size_t part_bytes, const std::vector<void*>& buffers) const {
    if (through_nccl() || from == to) return;
    const size_t offset = size_t(comm_.rank_of(from)) * part_bytes;
    check_cuda(cudaMemcpyPeerAsync(static_cast<uint8_t*>(buffers[to]) + offset, local_[to]->id,
                                   static_cast<const uint8_t*>(buffers[from]) + offset, local_[from]->id, part_bytes,
                                   local_[from]->stream),
               "copying a part to the collecting device");
}

void Transport::collect(size_t part_bytes, const std::vector<void*>& buffers) const {
    if (through_nccl()) comm_.all_gather(part_bytes, buffers);
}

void Transport::all_gather(size_t part_bytes, const std::vector<void*>& buffers) const {
    comm_.all_gather(part_bytes, buffers);
}

void Transport::gather_segments(const std::vector<size_t>& offsets, const std::vector<void*>& buffers) const {
    comm_.gather_segments(offsets, buffers);
}

}  // namespace dsa
