#include "gpu/multi/rank_group.hpp"

#include <algorithm>

namespace dsa {

RankGroup::RankGroup(const std::vector<int>& device_ids, const ProcessGroup* group) {
    for (int id : device_ids) {
        devices_.push_back(std::make_unique<Device>(id));
        raw_.push_back(devices_.back().get());
    }
    // Peer access lets results move between local GPUs without the host; where a pair has none, CUDA
    // stages those copies through the host instead.
    for (auto& a : devices_)
        for (auto& b : devices_) {
            int can = 0;
            if (a == b || cudaDeviceCanAccessPeer(&can, a->id, b->id) != cudaSuccess || !can) continue;
            DeviceScope scope(a->id);
            if (cudaDeviceEnablePeerAccess(b->id, 0) != cudaSuccess) cudaGetLastError();  // already enabled
        }
    comm_ = std::make_unique<Communicator>(raw_, group);
    transport_ = std::make_unique<Transport>(raw_, *comm_);
    workers_ = std::make_unique<WorkerPool>(devices_.size() - 1);
}

RankGroup::~RankGroup() {
    for (auto& d : devices_) {
        int previous = 0;
        cudaGetDevice(&previous);
        cudaSetDevice(d->id);
        cudaDeviceSynchronize();
        cudaSetDevice(previous);
    }
}

bool RankGroup::has_device(int id) const {
    return std::any_of(raw_.begin(), raw_.end(), [&](const Device* d) { return d->id == id; });
}

size_t RankGroup::index_of(int id, size_t fallback) const {
    for (size_t i = 0; i < raw_.size(); ++i)
        if (raw_[i]->id == id) return i;
    return fallback;
}

void RankGroup::wait_all() const {
    for (Device* d : raw_) {
        DeviceScope scope(d->id);
        check_cuda(cudaStreamSynchronize(d->stream), "cudaStreamSynchronize");
    }
}

}  // namespace dsa
