#include "gpu/multi/staging.hpp"

#include <utility>

#include "dsa_indexer.h"

namespace dsa {

void deliver(Device& d, const PagedProblem& host, const TopkOutputs& from, int64_t row0, int64_t rows,
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

}  // namespace dsa
