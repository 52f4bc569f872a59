// Where a page of a sharded owned cache (DSA_CACHE_SHARDED) lives, for the host plans and the kernels alike:
// physical page p on rank p % ranks, as that rank's local page p / ranks. A replica is the case ranks 1.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace dsa {

DSA_HOST_DEVICE int shard_owner(int64_t page, int ranks) { return int(page % ranks); }
DSA_HOST_DEVICE int64_t shard_local_page(int64_t page, int ranks) { return page / ranks; }
// Local pages each rank holds for a cache of num_pages pages.
DSA_HOST_DEVICE int64_t shard_pages(int64_t num_pages, int ranks) { return (num_pages + ranks - 1) / ranks; }

}  // namespace dsa
