// Concurrency (issue #5): many threads each with their own context; many threads sharing one context and
// one owned cache (calls on a context are serialised by the context: dsa_indexer.h, "Thread-safety");
// contexts and caches created and destroyed from many threads at once. Every result must equal the
// single-threaded one bit for bit, and every thread's error message stays its own. scripts/test.sh runs
// these in the plain, ASan+UBSan and TSan builds.
//
// Catch2 assertions are not thread-safe: worker threads collect failures as text, the main thread checks.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "dsa_indexer.h"
#include "test_util.hpp"

using namespace dsa_test;

namespace {

constexpr int kThreads = 8;
constexpr int kRounds = 3;

// Releases all waiting threads at once, so that their calls overlap as much as possible.
class StartGate {
public:
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        opened_.wait(lock, [&] { return open_; });
    }
    void open() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            open_ = true;
        }
        opened_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable opened_;
    bool open_ = false;
};

// Runs body(t) on kThreads threads started together; returns the failures they reported.
std::vector<std::string> run_threads(const std::function<void(int, std::string&)>& body) {
    StartGate gate;
    std::vector<std::string> failures(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            gate.wait();
            try {
                body(t, failures[size_t(t)]);
            } catch (const std::exception& e) {
                failures[size_t(t)] += std::string("exception: ") + e.what() + "\n";
            }
        });
    gate.open();
    for (auto& thread : threads) thread.join();
    failures.erase(std::remove(failures.begin(), failures.end(), std::string()), failures.end());
    return failures;
}

void expect(bool ok, std::string& failures, const std::string& what) {
    if (!ok) failures += what + "\n";
}

PagedCase paged_case(int heads, int page_size, int next_n, std::vector<int32_t> seq_lens, uint64_t seed) {
    PagedLayout layout = layout_of(heads, page_size, next_n);
    layout.page_padding_bytes = 0;  // the owned cache's layout, so the same keys can be written into one
    PagedCase c(layout, std::move(seq_lens), seed);
    Rng rng(seed + 1);
    fill_spec6(c, rng);
    return c;
}

RaggedCase ragged_case(int heads, const std::vector<int32_t>& key_lens, const std::vector<int32_t>& query_lens,
                       uint64_t seed) {
    int64_t keys = 0;
    for (int32_t n : key_lens) keys += n;
    RaggedCase c(heads, keys, causal_windows(key_lens, query_lens));
    Rng rng(seed);
    fill_spec6(c, rng);
    return c;
}

// An owned cache holding every physical page of `c` (its page stride has no padding).
dsa_cache_t cache_from(dsa_context_t ctx, const PagedCase& c) {
    const int P = c.layout.page_size;
    dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
    config.num_pages = c.num_pages;
    config.page_size = P;
    dsa_cache_t cache = nullptr;
    if (dsa_cache_create(ctx, &config, &cache) != DSA_STATUS_SUCCESS) throw std::runtime_error("creating a cache failed");
    const int64_t slots = c.num_pages * P;
    std::vector<int64_t> slot(static_cast<size_t>(slots));
    std::vector<uint8_t> keys(size_t(slots) * kHeadDim);
    std::vector<float> scales(static_cast<size_t>(slots));
    for (int64_t s = 0; s < slots; ++s) {
        slot[size_t(s)] = s;
        const uint8_t* page = c.k_cache.data() + (s / P) * c.page_stride;
        std::memcpy(&keys[size_t(s) * kHeadDim], page + (s % P) * kHeadDim, kHeadDim);
        std::memcpy(&scales[size_t(s)], page + int64_t(P) * kHeadDim + (s % P) * 4, 4);
    }
    if (dsa_cache_write(cache, slot.data(), keys.data(), scales.data(), slots, DSA_MEMORY_HOST) != DSA_STATUS_SUCCESS)
        throw std::runtime_error("writing the cache failed");
    return cache;
}

dsa_status_t run_owned(dsa_context_t ctx, dsa_cache_t cache, const PagedCase& c, int k, uint32_t flags, TopkOutput& out) {
    const dsa_topk_params_t params = c.params(k, flags);
    dsa_paged_inputs_t inputs = c.inputs();
    inputs.k_cache = nullptr;
    inputs.num_pages = 0;
    inputs.page_stride_bytes = 0;
    const dsa_topk_outputs_t outputs = out.outputs();
    return dsa_topk(ctx, cache, &params, &inputs, &outputs);
}

// The calls every thread makes: paged (engine path and owned cache) and ragged, with several k and flags.
struct Job {
    enum Kind { Paged, Ragged, Owned } kind;
    int which;  // the case
    int k;
    uint32_t flags;
    bool with_scores;
};

struct Workload {
    std::vector<PagedCase> paged;
    std::vector<RaggedCase> ragged;
    std::vector<Job> jobs;
    std::vector<TopkOutput> reference;  // per job, from one thread on a one-thread context

    int64_t rows(const Job& j) const { return j.kind == Job::Ragged ? ragged[size_t(j.which)].rows() : paged[size_t(j.which)].rows(); }

    // Owned jobs need the context's cache of paged case `which` (caches[which]).
    dsa_status_t run(dsa_context_t ctx, const std::vector<dsa_cache_t>& caches, const Job& j, TopkOutput& out) const {
        switch (j.kind) {
            case Job::Paged: return run_paged(ctx, paged[size_t(j.which)], j.k, j.flags, out);
            case Job::Ragged: return run_ragged(ctx, ragged[size_t(j.which)], j.k, j.flags, out);
            default: return run_owned(ctx, caches[size_t(j.which)], paged[size_t(j.which)], j.k, j.flags, out);
        }
    }
    std::vector<dsa_cache_t> make_caches(dsa_context_t ctx) const {
        std::vector<dsa_cache_t> caches;
        for (const PagedCase& c : paged) caches.push_back(cache_from(ctx, c));
        return caches;
    }
    static void destroy(std::vector<dsa_cache_t>& caches) {
        for (dsa_cache_t c : caches) dsa_cache_destroy(c);
        caches.clear();
    }

    // Runs job i and compares with the reference; returns "" or what differed.
    std::string check(dsa_context_t ctx, const std::vector<dsa_cache_t>& caches, size_t i) const {
        const Job& j = jobs[i];
        TopkOutput out(rows(j), j.k, j.with_scores);
        const dsa_status_t status = run(ctx, caches, j, out);
        if (status != DSA_STATUS_SUCCESS) return "job " + std::to_string(i) + ": " + describe_status(status);
        if (!out.guards_intact()) return "job " + std::to_string(i) + " wrote past its outputs";
        if (!out.same_bits(reference[i])) return "job " + std::to_string(i) + " differs from the single-thread result";
        return "";
    }
};

const Workload& workload() {
    static const Workload w = [] {
        Workload w;
        w.paged.push_back(paged_case(64, 64, 2, {900, 300, 5, 0}, 501));
        w.paged.push_back(paged_case(32, 32, 1, {2500, 64, 33}, 502));
        w.paged.push_back(paged_case(64, 32, 4, {130, 7, 2049}, 503));
        w.ragged.push_back(ragged_case(64, {700, 300}, {3, 2}, 504));
        w.ragged.push_back(ragged_case(32, {100, 1, 40}, {4, 1, 2}, 505));
        const uint32_t sorted = DSA_TOPK_SORTED, logical = DSA_TOPK_LOGICAL_INDICES, absolute = DSA_TOPK_ABSOLUTE_INDICES;
        w.jobs = {{Job::Paged, 0, 100, sorted, true},        {Job::Paged, 1, 64, logical, false},
                  {Job::Paged, 2, 2048, sorted | logical, true}, {Job::Ragged, 0, 50, absolute | sorted, true},
                  {Job::Ragged, 1, 2048, 0, false},            {Job::Owned, 0, 40, sorted, true},
                  {Job::Owned, 1, 7, 0, true},                 {Job::Owned, 2, 300, logical, false}};
        Context ctx(1);
        std::vector<dsa_cache_t> caches = w.make_caches(ctx.get());
        for (const Job& j : w.jobs) {
            w.reference.emplace_back(w.rows(j), j.k, j.with_scores);
            if (w.run(ctx.get(), caches, j, w.reference.back()) != DSA_STATUS_SUCCESS)
                throw std::runtime_error("a reference run failed");
        }
        Workload::destroy(caches);
        return w;
    }();
    return w;
}

// A call that fails with a message naming this thread's own bad value: topk 3000 + t.
std::string own_failure(dsa_context_t ctx, int t) {
    const PagedCase& c = workload().paged[0];
    TopkOutput out(c.rows(), 1, false);
    const dsa_status_t status = run_paged(ctx, c, 3000 + t, 0, out);
    const std::string message = dsa_last_error_message();
    if (status != DSA_STATUS_UNSUPPORTED) return "topk " + std::to_string(3000 + t) + " was not rejected";
    if (message.find(std::to_string(3000 + t)) == std::string::npos) return "message of another thread: " + message;
    if (!out.untouched()) return "a rejected call wrote its outputs";
    return "";
}

}  // namespace

TEST_CASE("threads with their own contexts give the single-thread results", "[concurrency]") {
    const Workload& w = workload();
    const std::vector<std::string> failures = run_threads([&](int t, std::string& failed) {
        Context ctx(1 + t % 3);  // 1, 2 or 3 CPU threads of its own
        std::vector<dsa_cache_t> caches = w.make_caches(ctx.get());
        for (int round = 0; round < kRounds; ++round)
            for (size_t n = 0; n < w.jobs.size(); ++n) {
                const size_t i = (n + size_t(t)) % w.jobs.size();  // threads start on different jobs
                const std::string diff = w.check(ctx.get(), caches, i);
                expect(diff.empty(), failed, diff);
                if (i % 3 == 0) {
                    const std::string other = own_failure(ctx.get(), t);
                    expect(other.empty(), failed, other);
                }
            }
        Workload::destroy(caches);
    });
    INFO(failures.size() << " threads failed; first: " << (failures.empty() ? "" : failures.front()));
    CHECK(failures.empty());
}

TEST_CASE("threads sharing one context are serialised and give the single-thread results", "[concurrency]") {
    const Workload& w = workload();
    Context shared(2);
    std::vector<dsa_cache_t> caches = w.make_caches(shared.get());

    // Scratch slots on pages no visible position of paged case 0 uses: writers fill all of them with one
    // value per call; readers must never see two values at once (a write is never interleaved with a read).
    const PagedCase& c0 = w.paged[0];
    std::set<int32_t> used;
    for (int32_t b = 0; b < c0.batch_size; ++b)
        for (int64_t i = 0; i < c0.pages_of(b); ++i) used.insert(c0.block_table[size_t(b * c0.table_stride + i)]);
    std::vector<int64_t> scratch;
    for (int32_t page = 0; page < c0.num_pages; ++page)
        if (!used.count(page))
            for (int s = 0; s < c0.layout.page_size; ++s) scratch.push_back(int64_t(page) * c0.layout.page_size + s);
    REQUIRE(scratch.size() >= 64);
    const int64_t n = int64_t(scratch.size());
    const std::vector<uint8_t> first_keys(size_t(n) * kHeadDim, 1);
    const std::vector<float> first_scales(static_cast<size_t>(n), 1.0f);
    REQUIRE(dsa_cache_write(caches[0], scratch.data(), first_keys.data(), first_scales.data(), n, DSA_MEMORY_HOST) ==
            DSA_STATUS_SUCCESS);

    const std::vector<std::string> failures = run_threads([&](int t, std::string& failed) {
        for (int round = 0; round < kRounds; ++round)
            for (size_t k = 0; k < w.jobs.size(); ++k) {
                const size_t i = (k + size_t(t)) % w.jobs.size();
                const std::string diff = w.check(shared.get(), caches, i);
                expect(diff.empty(), failed, diff);

                if (t % 2 == 0) {  // writer: one value everywhere, in one call
                    const uint8_t value = uint8_t(1 + (t * 31 + int(k) + round * 7) % 120);
                    const std::vector<uint8_t> keys(size_t(n) * kHeadDim, value);
                    const std::vector<float> scales(static_cast<size_t>(n), float(value));
                    expect(dsa_cache_write(caches[0], scratch.data(), keys.data(), scales.data(), n, DSA_MEMORY_HOST) ==
                               DSA_STATUS_SUCCESS,
                           failed, "scratch write failed: " + std::string(dsa_last_error_message()));
                } else {  // reader: every scratch token holds the same value
                    std::vector<uint8_t> keys(size_t(n) * kHeadDim);
                    std::vector<float> scales(static_cast<size_t>(n));
                    expect(dsa_cache_read(caches[0], scratch.data(), keys.data(), scales.data(), n, DSA_MEMORY_HOST) ==
                               DSA_STATUS_SUCCESS,
                           failed, "scratch read failed");
                    const bool uniform = std::all_of(keys.begin(), keys.end(), [&](uint8_t b) { return b == keys[0]; }) &&
                                         std::all_of(scales.begin(), scales.end(), [&](float s) { return s == float(keys[0]); });
                    expect(uniform, failed, "a read saw a half-done write");
                }
                const std::string other = own_failure(shared.get(), t);
                expect(other.empty(), failed, other);
                size_t bytes = 1;
                const dsa_topk_params_t params = c0.params(8, 0);
                const dsa_paged_inputs_t inputs = c0.inputs();
                expect(dsa_topk_paged_workspace_size(shared.get(), &params, &inputs, &bytes) == DSA_STATUS_SUCCESS && bytes == 0,
                       failed, "workspace query");
                int32_t devices = -1;
                expect(dsa_context_num_devices(shared.get(), &devices) == DSA_STATUS_SUCCESS && devices == 0, failed,
                       "num_devices");
                expect(dsa_context_synchronize(shared.get()) == DSA_STATUS_SUCCESS, failed, "synchronize");
            }
    });
    INFO(failures.size() << " threads failed; first: " << (failures.empty() ? "" : failures.front()));
    CHECK(failures.empty());
    Workload::destroy(caches);
}

TEST_CASE("contexts and caches created and destroyed from many threads", "[concurrency]") {
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    config.num_cpu_threads = 2;
    dsa_context_t shared = nullptr;
    REQUIRE(dsa_context_create(&config, &shared) == DSA_STATUS_SUCCESS);
    const PagedCase& c = workload().paged[1];

    const std::vector<std::string> failures = run_threads([&](int t, std::string& failed) {
        for (int i = 0; i < 20; ++i) {
            // A context of its own, a cache on it and a call, all torn down again.
            Context own(1);
            dsa_cache_t cache = cache_from(own.get(), c);
            TopkOutput out(c.rows(), 16, true);
            expect(run_owned(own.get(), cache, c, 16, DSA_TOPK_SORTED, out) == DSA_STATUS_SUCCESS, failed, "owned call");
            expect(dsa_cache_destroy(cache) == DSA_STATUS_SUCCESS, failed, "cache destroy");

            // A cache on the shared context: created, written, read, destroyed while others do the same.
            dsa_cache_config_t cache_config = DSA_CACHE_CONFIG_INIT;
            cache_config.num_pages = 2;
            dsa_cache_t mine = nullptr;
            expect(dsa_cache_create(shared, &cache_config, &mine) == DSA_STATUS_SUCCESS, failed, "shared cache create");
            const int64_t slot = (t * 7 + i) % 128;
            const std::vector<uint8_t> key(kHeadDim, uint8_t(t + 1));
            const float scale = float(i);
            std::vector<uint8_t> key_back(kHeadDim);
            float scale_back = -1.0f;
            expect(dsa_cache_write(mine, &slot, key.data(), &scale, 1, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS &&
                       dsa_cache_read(mine, &slot, key_back.data(), &scale_back, 1, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS &&
                       key_back == key && scale_back == scale,
                   failed, "shared cache round trip");
            // Changing devices while caches live is refused; with none it may succeed. Either way the
            // context keeps working.
            const dsa_status_t moved = dsa_context_set_devices(shared, nullptr, 0);
            expect(moved == DSA_STATUS_SUCCESS || moved == DSA_STATUS_INVALID_ARGUMENT, failed,
                   "set_devices: " + describe_status(moved));
            expect(dsa_cache_destroy(mine) == DSA_STATUS_SUCCESS, failed, "shared cache destroy");
        }
    });
    INFO(failures.size() << " threads failed; first: " << (failures.empty() ? "" : failures.front()));
    CHECK(failures.empty());
    CHECK(dsa_context_destroy(shared) == DSA_STATUS_SUCCESS);  // every cache is gone again
}
