#include "gpu/multi/communicator.hpp"

#include <cstring>
#include <string>

#include "common/error.hpp"

#if DSA_WITH_NCCL
#include <nccl.h>
#endif

namespace dsa {

#if DSA_WITH_NCCL

namespace {

// Throws DSA_STATUS_NCCL_ERROR with NCCL's own text (and its last detailed message when it has one).
void check_nccl(ncclResult_t result, const char* what, ncclComm_t comm = nullptr) {
    if (result == ncclSuccess || result == ncclInProgress) return;
    const char* detail = comm ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
    fail(DSA_STATUS_NCCL_ERROR, what, " failed: ", ncclGetErrorString(result),
         (detail && *detail) ? std::string(" (") + detail + ")" : std::string());
}

// Starts an NCCL group and always ends it, so an exception between the two never leaves one open.
class NcclGroup {
public:
    NcclGroup() { check_nccl(ncclGroupStart(), "ncclGroupStart"); }
    void end() {
        ended_ = true;
        check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    }
    ~NcclGroup() {
        if (!ended_) ncclGroupEnd();
    }

private:
    bool ended_ = false;
};

}  // namespace

struct Communicator::Comms {
    std::vector<ncclComm_t> comms;
    ~Comms() {
        for (ncclComm_t c : comms)
            if (c) ncclCommDestroy(c);
    }
};

Communicator::Communicator(const std::vector<Device*>& local, const ProcessGroup* group) : local_(local) {
    if (group) {
        spans_processes_ = group->world_size > 1;
        first_rank_ = group->rank;
        world_size_ = group->world_size;
    } else {
        world_size_ = int(local.size());
    }
    if (world_size_ == 1) return;
    comms_ = std::make_unique<Comms>();
    comms_->comms.assign(local.size(), nullptr);
    if (group) {
        ncclUniqueId id;
        static_assert(sizeof id == 128, "ncclUniqueId is 128 bytes (DSA_NCCL_UNIQUE_ID_BYTES)");
        std::memcpy(&id, group->unique_id.data(), sizeof id);
        DeviceScope scope(local[0]->id);
        check_nccl(ncclCommInitRank(&comms_->comms[0], world_size_, id, first_rank_), "ncclCommInitRank");
    } else {
        std::vector<int> ids;
        for (Device* d : local) ids.push_back(d->id);
        check_nccl(ncclCommInitAll(comms_->comms.data(), int(ids.size()), ids.data()), "ncclCommInitAll");
    }
}

Communicator::~Communicator() = default;

void Communicator::broadcast(int root, size_t bytes, const std::vector<void*>& buffers) {
    if (!comms_ || bytes == 0) return;
    NcclGroup group;
    for (size_t i = 0; i < local_.size(); ++i)
        check_nccl(ncclBroadcast(buffers[i], buffers[i], bytes, ncclUint8, root, comms_->comms[i], local_[i]->stream),
                   "ncclBroadcast", comms_->comms[i]);
    group.end();
}

void Communicator::all_gather(size_t bytes_per_rank, const std::vector<void*>& buffers) {
    if (!comms_ || bytes_per_rank == 0) return;
    NcclGroup group;
    for (size_t i = 0; i < local_.size(); ++i) {
        auto* base = static_cast<char*>(buffers[i]);
        check_nccl(ncclAllGather(base + size_t(rank_of(i)) * bytes_per_rank, base, bytes_per_rank, ncclUint8,
                                 comms_->comms[i], local_[i]->stream),
                   "ncclAllGather", comms_->comms[i]);
    }
    group.end();
}

void Communicator::gather_segments(const std::vector<size_t>& offsets, const std::vector<void*>& buffers) {
    if (!comms_) return;
    NcclGroup group;
    for (int root = 0; root < world_size_; ++root) {
        const size_t bytes = offsets[size_t(root) + 1] - offsets[size_t(root)];
        if (bytes == 0) continue;
        for (size_t i = 0; i < local_.size(); ++i) {
            char* part = static_cast<char*>(buffers[i]) + offsets[size_t(root)];
            check_nccl(ncclBroadcast(part, part, bytes, ncclUint8, root, comms_->comms[i], local_[i]->stream),
                       "ncclBroadcast", comms_->comms[i]);
        }
    }
    group.end();
}

std::array<char, 128> new_nccl_unique_id() {
    ncclUniqueId id;
    check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::array<char, 128> out{};
    std::memcpy(out.data(), &id, sizeof id);
    return out;
}

#else  // built without NCCL: one GPU per context, and no contexts spanning processes

struct Communicator::Comms {};

Communicator::Communicator(const std::vector<Device*>& local, const ProcessGroup* group) : local_(local) {
    require(!group && local.size() <= 1, DSA_STATUS_NOT_IMPLEMENTED,
            "this build of libdsa_indexer has no NCCL: a context may hold one GPU and no process group");
}

Communicator::~Communicator() = default;
void Communicator::broadcast(int, size_t, const std::vector<void*>&) {}
void Communicator::all_gather(size_t, const std::vector<void*>&) {}
void Communicator::gather_segments(const std::vector<size_t>&, const std::vector<void*>&) {}

std::array<char, 128> new_nccl_unique_id() {
    fail(DSA_STATUS_NOT_IMPLEMENTED, "this build of libdsa_indexer has no NCCL (no contexts spanning processes)");
}

#endif

}  // namespace dsa
