// A directory of generated benchmark inputs. SPEC section 6 inputs come from one sequential generator (4.5 s per
// million tokens of a paged workload on one core of the development machine), more than the timing and the check
// of a large workload cost, and scripts/gpu-ab.sh runs the same workloads once per library build and round. With a
// cache directory, each workload's inputs are drawn once and read back by the later runs (`dsa_bench
// --input-cache DIR`).
//
// A file holds the bytes of one case's generated buffers and the description of the workload that drew them;
// a file whose description or sizes differ from what is asked is ignored and replaced. The description names the
// workload, not the generator's code: use a fresh directory for a run of code whose generator differs.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace dsa_bench {

struct CachedBytes {
    void* data;
    size_t size;
};

// Fills `parts` from the file for `description` in `dir` when it holds exactly those sizes and returns true;
// else runs generate(), which must fill them, writes them to that file (a warning on stderr when it cannot) and
// returns false. An empty dir only runs generate().
bool fill_from_cache(const std::string& dir, const std::string& description, const std::vector<CachedBytes>& parts,
                     const std::function<void()>& generate);

}  // namespace dsa_bench
