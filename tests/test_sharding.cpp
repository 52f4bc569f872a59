// The multi-GPU work plans of src/gpu/multi/sharding.cpp (compiled into this test: the library hides them):
// how dsa_topk splits sequences over the ranks of a replicated cache, and where a sharded cache keeps a
// page, and the worker threads that drive the GPUs. The GPU results built on them are compared with one
// GPU in test_multi_gpu.cpp.
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "catch_shim.hpp"
#include "gpu/multi/sharding.hpp"
#include "gpu/multi/worker_pool.hpp"

namespace {

struct Batch {
    std::vector<int32_t> seq_lens, table;
    dsa::PagedProblem pb;
};

// A batch with random lengths (including 0 and page-boundary cases) and a random page assignment.
Batch random_batch(std::mt19937& rng, int32_t batch, int next_n, int P, int32_t max_pages, int64_t stride_pad) {
    Batch out;
    out.pb.shape.page_size = P;
    out.pb.shape.next_n = next_n;
    out.pb.batch_size = batch;
    out.pb.max_pages = max_pages;
    out.pb.block_table_stride = max_pages + stride_pad;
    out.pb.num_pages = int64_t(batch) * max_pages;
    std::vector<int32_t> pages(size_t(out.pb.num_pages));
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);
    out.table.assign(size_t(batch) * size_t(out.pb.block_table_stride), -7);  // padding columns never read
    for (int32_t b = 0; b < batch; ++b) {
        const int32_t pick = int32_t(rng() % 5);
        out.seq_lens.push_back(pick == 0 ? 0 : pick == 1 ? P * int32_t(rng() % (max_pages + 1))
                                                         : int32_t(rng() % (int64_t(max_pages) * P + 1)));
        for (int32_t i = 0; i < max_pages; ++i)
            out.table[size_t(b) * size_t(out.pb.block_table_stride) + size_t(i)] = pages[size_t(b) * max_pages + size_t(i)];
    }
    out.pb.seq_lens = out.seq_lens.data();
    out.pb.block_table = out.table.data();
    return out;
}

}  // namespace

TEST_CASE("split_sequences: contiguous ranges covering the batch, balanced by visible tokens", "[cpu][sharding]") {
    std::mt19937 rng(11);
    for (int trial = 0; trial < 200; ++trial) {
        const int ranks = 1 + int(rng() % 8);
        const int32_t batch = int32_t(rng() % 40);
        Batch b = random_batch(rng, batch, 1 + int(rng() % 4), 64, 1 + int32_t(rng() % 40), 0);
        const std::vector<int32_t> bounds = dsa::split_sequences(b.pb, ranks);
        REQUIRE(bounds.size() == size_t(ranks) + 1);
        CHECK(bounds.front() == 0);
        CHECK(bounds.back() == batch);
        CHECK(std::is_sorted(bounds.begin(), bounds.end()));
    }
    // Equal sequences split evenly; one huge sequence among small ones gets a rank nearly to itself.
    std::vector<int32_t> lens(64, 8192);
    dsa::PagedProblem pb;
    pb.batch_size = 64;
    pb.seq_lens = lens.data();
    CHECK(dsa::split_sequences(pb, 4) == std::vector<int32_t>{0, 16, 32, 48, 64});
    lens.assign(9, 1000);
    lens[0] = 1 << 20;
    pb.batch_size = 9;
    const std::vector<int32_t> skewed = dsa::split_sequences(pb, 2);
    CHECK(skewed[1] == 1);
}

TEST_CASE("shard sizes: local page numbers stay below shard_pages", "[cpu][sharding]") {
    for (int64_t pages : {1, 2, 7, 64, 1000}) {
        for (int ranks = 1; ranks <= 8; ++ranks) {
            for (int64_t p = 0; p < pages; ++p) CHECK(dsa::shard_local_page(p, ranks) < dsa::shard_pages(pages, ranks));
        }
    }
}

TEST_CASE("WorkerPool: every index once per run, exceptions come back, more tasks than workers", "[cpu][sharding]") {
    for (size_t workers : {size_t(0), size_t(1), size_t(3)}) {
        dsa::WorkerPool pool(workers);
        for (int round = 0; round < 200; ++round) {
            const size_t n = size_t(round % 6);
            std::vector<std::atomic<int>> hits(n);
            pool.run(n, [&](size_t i) { hits[i]++; });
            for (size_t i = 0; i < n; ++i) CHECK(hits[i] == 1);
        }
        bool thrown = false;
        try {
            pool.run(4, [](size_t i) {
                if (i == 2) throw std::runtime_error("task 2");
            });
        } catch (const std::runtime_error& e) {
            thrown = std::string(e.what()) == "task 2";
        }
        CHECK(thrown);
        std::atomic<int> after{0};
        pool.run(3, [&](size_t) { after++; });  // still usable after an exception
        CHECK(after == 3);
    }
}
