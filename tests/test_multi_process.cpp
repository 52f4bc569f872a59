// One context spanning two processes, one GPU each (dsa_context_config_t.nccl_unique_id / nccl_rank /
// nccl_world_size, library 0.2). In both cache modes the collective dsa_cache_create / write / read /
// destroy and dsa_topk must give every rank the whole result, bit for bit that of a one-GPU context and of
// the CPU backend. Rank 1 passes junk keys to dsa_cache_write: rank 0's are the ones written.
//
//   dsa_multi_process_test                      the parent: makes the NCCL id, starts ranks 0 and 1 (this
//                                               program again, so neither inherits CUDA or NCCL state),
//                                               waits; kills them and fails after 120 s
//   dsa_multi_process_test --rank R --id HEX    one rank
//
// Exit status: 0 pass, 1 fail, 77 skipped (fewer than 2 GPUs, or a library built without NCCL).
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "dsa_indexer.h"
#include "test_util.hpp"

extern char** environ;

namespace {

using namespace dsa_test;

constexpr int kSkip = 77;
constexpr int kTimeoutSeconds = 120;
constexpr int kWorldSize = 2;

// ---- the NCCL id on the command line --------------------------------------------------------------------
std::string to_hex(const dsa_nccl_unique_id_t& id) {
    static const char digits[] = "0123456789abcdef";
    std::string hex;
    for (char ch : id.internal) {
        const auto byte = static_cast<unsigned char>(ch);
        hex += digits[byte >> 4];
        hex += digits[byte & 15];
    }
    return hex;
}

bool from_hex(const std::string& hex, dsa_nccl_unique_id_t* id) {
    if (hex.size() != 2 * sizeof id->internal) return false;
    auto nibble = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
    for (size_t i = 0; i < sizeof id->internal; ++i) {
        const int high = nibble(hex[2 * i]), low = nibble(hex[2 * i + 1]);
        if (high < 0 || low < 0) return false;
        id->internal[i] = char((high << 4) | low);
    }
    return true;
}

// ---- one rank ----------------------------------------------------------------------------------------------
struct Variant {
    int k;
    uint32_t flags;
    bool with_scores;
};

struct Result {
    std::vector<int32_t> indices;
    std::vector<float> scores;
    bool operator==(const Result& o) const {
        return indices == o.indices && scores.size() == o.scores.size() &&
               std::memcmp(scores.data(), o.scores.data(), scores.size() * 4) == 0;
    }
};

class Rank {
public:
    explicit Rank(int rank) : rank_(rank) {}

    // Counts a failure and says what it was.
    void fail(const std::string& what) {
        std::printf("rank %d: FAIL: %s\n", rank_, what.c_str());
        std::fflush(stdout);
        ++failures_;
    }
    bool ok(dsa_status_t status, const std::string& what) {
        if (status == DSA_STATUS_SUCCESS) return true;
        fail(what + ": " + describe_status(status));
        return false;
    }
    int failures() const { return failures_; }
    int rank() const { return rank_; }

private:
    int rank_;
    int failures_ = 0;
};

// The same case on every rank (fixed seeds): tie-free integer data, pages in random order.
PagedCase make_case() {
    PagedCase c(layout_of(64, 64, 2), {0, 1, 100, 3000, 9000, 20000, 4097}, 31001);
    Rng rng(31002);
    fill_tie_free(c, rng);
    return c;
}

struct Tokens {
    std::vector<int64_t> slots;
    std::vector<uint8_t> keys;
    std::vector<float> scales;
};

// Every slot of every page of `c`, in slot order.
Tokens tokens_of(const PagedCase& c) {
    const int P = c.layout.page_size;
    Tokens t;
    const int64_t n = c.num_pages * P;
    t.keys.resize(size_t(n) * kHeadDim);
    t.scales.resize(size_t(n));
    for (int64_t s = 0; s < n; ++s) {
        t.slots.push_back(s);
        const uint8_t* page = c.k_cache.data() + (s / P) * c.page_stride;
        std::memcpy(&t.keys[size_t(s) * kHeadDim], page + (s % P) * kHeadDim, kHeadDim);
        std::memcpy(&t.scales[size_t(s)], page + int64_t(P) * kHeadDim + (s % P) * 4, 4);
    }
    return t;
}

const std::vector<Variant> kVariants = {
    {2048, DSA_TOPK_SORTED, true},
    {100, 0u, false},
    {2048, DSA_TOPK_LOGICAL_INDICES, false},
    {100, DSA_TOPK_SORTED | DSA_TOPK_LOGICAL_INDICES, true},
};

// On `ctx` (collective when it spans processes): a cache in `mode`, written in two calls from `keys`,
// every variant run, every slot read back and compared with `expected_tokens`, the cache destroyed.
// Returns false (results incomplete) on a failed call.
bool run_mode(Rank& me, dsa_context_t ctx, const PagedCase& c, int mode, const Tokens& write, const Tokens& expected_tokens,
              std::vector<Result>& results) {
    const std::string where = std::string(mode == DSA_CACHE_SHARDED ? "sharded" : "replicated") + " cache: ";
    dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
    config.num_pages = c.num_pages;
    config.page_size = c.layout.page_size;
    config.mode = mode;
    dsa_cache_t cache = nullptr;
    if (!me.ok(dsa_cache_create(ctx, &config, &cache), where + "dsa_cache_create")) return false;
    bool complete = true;
    const int64_t n = int64_t(write.slots.size()), half = n / 2;
    complete = me.ok(dsa_cache_write(cache, write.slots.data(), write.keys.data(), write.scales.data(), half, DSA_MEMORY_HOST),
                     where + "dsa_cache_write (first half)") &&
               me.ok(dsa_cache_write(cache, write.slots.data() + half, write.keys.data() + half * kHeadDim,
                                     write.scales.data() + half, n - half, DSA_MEMORY_HOST),
                     where + "dsa_cache_write (second half)");
    const dsa_paged_inputs_t inputs = [&] {
        dsa_paged_inputs_t in = c.inputs();
        in.k_cache = nullptr;
        in.num_pages = 0;
        in.page_stride_bytes = 0;
        return in;
    }();
    results.clear();
    for (size_t i = 0; complete && i < kVariants.size(); ++i) {
        const Variant& v = kVariants[i];
        TopkOutput out(c.rows(), v.k, v.with_scores);
        const dsa_topk_params_t params = c.params(v.k, v.flags);
        const dsa_topk_outputs_t outputs = out.outputs();
        complete = me.ok(dsa_topk(ctx, cache, &params, &inputs, &outputs), where + "dsa_topk variant " + std::to_string(i));
        if (!complete) break;
        if (!out.guards_intact()) me.fail(where + "dsa_topk wrote past its outputs");
        Result r;
        r.indices.assign(out.indices(), out.indices() + c.rows() * v.k);
        if (v.with_scores) r.scores.assign(out.scores(), out.scores() + c.rows() * v.k);
        results.push_back(std::move(r));
    }
    if (complete) {
        Tokens back;
        back.keys.assign(expected_tokens.keys.size(), 0xEE);
        back.scales.assign(expected_tokens.scales.size(), -7.0f);
        complete = me.ok(dsa_cache_read(cache, expected_tokens.slots.data(), back.keys.data(), back.scales.data(), n,
                                        DSA_MEMORY_HOST),
                         where + "dsa_cache_read");
        if (complete && (back.keys != expected_tokens.keys ||
                         std::memcmp(back.scales.data(), expected_tokens.scales.data(), back.scales.size() * 4) != 0))
            me.fail(where + "dsa_cache_read did not return rank 0's tokens");
    }
    me.ok(dsa_cache_destroy(cache), where + "dsa_cache_destroy");
    return complete;
}

void compare(Rank& me, const char* what, const std::vector<Result>& expected, const std::vector<Result>& got) {
    if (expected.size() != got.size()) return me.fail(std::string(what) + ": results missing");
    for (size_t i = 0; i < expected.size(); ++i)
        if (!(expected[i] == got[i])) me.fail(std::string(what) + ": variant " + std::to_string(i) + " differs");
}

int run_rank(int rank, const dsa_nccl_unique_id_t& id) {
    Rank me(rank);
    const PagedCase c = make_case();
    const Tokens real = tokens_of(c);
    Tokens junk = real;  // what rank 1 passes: must not reach the cache
    std::fill(junk.keys.begin(), junk.keys.end(), uint8_t(0x38));
    std::fill(junk.scales.begin(), junk.scales.end(), 7.0f);
    const Tokens& mine = rank == 0 ? real : junk;
    const int32_t device = rank;
    const int modes[] = {DSA_CACHE_REPLICATED, DSA_CACHE_SHARDED};
    std::vector<Result> spanning[2], one_gpu[2], cpu[2];

    {  // The context spanning both processes; every call below is made by both ranks in the same order.
        dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
        config.device_ids = &device;
        config.num_devices = 1;
        config.nccl_unique_id = &id;
        config.nccl_rank = rank;
        config.nccl_world_size = kWorldSize;
        dsa_context_t ctx = nullptr;
        if (!me.ok(dsa_context_create(&config, &ctx), "dsa_context_create (2 processes)")) return 1;
        int32_t local = -1;
        if (me.ok(dsa_context_num_devices(ctx, &local), "dsa_context_num_devices") && local != 1)
            me.fail("dsa_context_num_devices gave " + std::to_string(local) + ", expected 1 (GPUs in this process)");
        // A rank is bound to its GPU: set_devices is refused (before any communication) and changes nothing.
        const dsa_status_t set = dsa_context_set_devices(ctx, &device, 1);
        if (set != DSA_STATUS_UNSUPPORTED)
            me.fail(std::string("dsa_context_set_devices on a spanning context: ") + dsa_status_string(set) +
                    ", expected DSA_STATUS_UNSUPPORTED");
        for (int m = 0; m < 2; ++m)
            if (!run_mode(me, ctx, c, modes[m], mine, real, spanning[m])) break;  // a lost collective: stop here
        me.ok(dsa_context_destroy(ctx), "dsa_context_destroy (2 processes)");
    }
    if (me.failures() > 0) return 1;  // the references below need the spanning results

    try {  // References, made after the collective calls: a one-GPU context on this rank's GPU, the CPU backend.
        Context gpu(&device, 1), host;
        for (int m = 0; m < 2; ++m) {
            run_mode(me, gpu.get(), c, modes[m], real, real, one_gpu[m]);
            run_mode(me, host.get(), c, modes[m], real, real, cpu[m]);
            const char* mode = m == 0 ? "replicated" : "sharded";
            compare(me, (std::string(mode) + ": 2 processes vs 1 GPU").c_str(), one_gpu[m], spanning[m]);
            compare(me, (std::string(mode) + ": 2 processes vs the CPU backend").c_str(), cpu[m], spanning[m]);
        }
        const auto exact = integer_scores(c);
        for (size_t i = 0; i < kVariants.size() && i < spanning[1].size(); ++i) {
            const Result& r = spanning[1][i];
            const std::string failure = check_exact(c, exact, kVariants[i].k, kVariants[i].flags, r.indices.data(),
                                                    r.scores.empty() ? nullptr : r.scores.data());
            if (!failure.empty()) me.fail("sharded, variant " + std::to_string(i) + " vs the exact expectation: " + failure);
        }
    } catch (const std::exception& e) {
        me.fail(e.what());
    }
    std::printf("rank %d: %s\n", rank, me.failures() == 0 ? "PASS" : "FAILED");
    return me.failures() == 0 ? 0 : 1;
}

// ---- the parent ---------------------------------------------------------------------------------------------
// 0 when GPU 1 can hold a context (so 2 GPUs exist), kSkip when it does not exist, 1 on another failure.
int probe_two_gpus() {
    const int32_t second = 1;
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    config.device_ids = &second;
    config.num_devices = 1;
    dsa_context_t ctx = nullptr;
    const dsa_status_t status = dsa_context_create(&config, &ctx);
    if (status == DSA_STATUS_SUCCESS) {
        dsa_context_destroy(ctx);
        return 0;
    }
    if (status == DSA_STATUS_NO_DEVICE) {
        std::printf("SKIPPED: needs 2 GPUs (%s)\n", dsa_last_error_message());
        return kSkip;
    }
    std::printf("dsa_multi_process_test: a context on GPU 1 failed: %s\n", describe_status(status).c_str());
    return 1;
}

int run_parent() {
    // NVLink multicast is not needed; keep it off in the ranks unless the environment says otherwise.
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    if (const int probe = probe_two_gpus(); probe != 0) return probe;
    dsa_nccl_unique_id_t id;
    const dsa_status_t status = dsa_nccl_unique_id_create(&id);
    if (status == DSA_STATUS_NOT_IMPLEMENTED) {
        std::printf("SKIPPED: the library was built without NCCL (%s)\n", dsa_last_error_message());
        return kSkip;
    }
    if (status != DSA_STATUS_SUCCESS) {
        std::printf("dsa_nccl_unique_id_create: %s\n", describe_status(status).c_str());
        return 1;
    }
    const std::string hex = to_hex(id);
    std::fflush(stdout);

    pid_t pids[kWorldSize] = {};
    for (int r = 0; r < kWorldSize; ++r) {
        std::string self = "/proc/self/exe", rank_flag = "--rank", rank = std::to_string(r), id_flag = "--id", id_text = hex;
        char* argv[] = {&self[0], &rank_flag[0], &rank[0], &id_flag[0], &id_text[0], nullptr};
        if (const int error = posix_spawn(&pids[r], "/proc/self/exe", nullptr, nullptr, argv, environ); error != 0) {
            std::printf("dsa_multi_process_test: cannot start rank %d: %s\n", r, std::strerror(error));
            for (int k = 0; k < r; ++k) {
                kill(pids[k], SIGKILL);
                waitpid(pids[k], nullptr, 0);
            }
            return 1;
        }
    }

    // Wait for both. A rank that fails leaves the other stuck in a collective: it gets 15 s, then is killed;
    // and nothing outlives the overall limit.
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::seconds(kTimeoutSeconds);
    auto failed_at = clock::time_point::max();
    bool running[kWorldSize] = {true, true};
    int exit_codes[kWorldSize] = {-1, -1};
    bool failed = false;
    for (int alive = kWorldSize; alive > 0;) {
        for (int r = 0; r < kWorldSize; ++r) {
            int wait_status = 0;
            if (!running[r] || waitpid(pids[r], &wait_status, WNOHANG) != pids[r]) continue;
            running[r] = false;
            --alive;
            if (WIFEXITED(wait_status)) exit_codes[r] = WEXITSTATUS(wait_status);
            else std::printf("rank %d: killed by signal %d\n", r, WIFSIGNALED(wait_status) ? WTERMSIG(wait_status) : -1);
            if (exit_codes[r] != 0 && !failed) {
                failed = true;
                failed_at = clock::now();
            }
        }
        const auto now = clock::now();
        const bool late = now > deadline, orphaned = failed && now > failed_at + std::chrono::seconds(15);
        if (alive > 0 && (late || orphaned)) {
            for (int r = 0; r < kWorldSize; ++r)
                if (running[r]) {
                    std::printf("rank %d: %s; killed\n", r, late ? "still running after the time limit" : "stuck after the other rank failed");
                    kill(pids[r], SIGKILL);
                    waitpid(pids[r], nullptr, 0);
                    running[r] = false;
                    --alive;
                }
            failed = true;
        }
        if (alive > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const bool pass = !failed && exit_codes[0] == 0 && exit_codes[1] == 0;
    std::printf("dsa_multi_process_test: %s (rank exit codes %d, %d)\n", pass ? "PASS" : "FAILED", exit_codes[0], exit_codes[1]);
    return pass ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 1) return run_parent();
    dsa_nccl_unique_id_t id;
    if (argc != 5 || std::strcmp(argv[1], "--rank") != 0 || std::strcmp(argv[3], "--id") != 0 || !from_hex(argv[4], &id)) {
        std::fprintf(stderr, "usage: %s [--rank R --id HEX]\n", argv[0]);
        return 2;
    }
    const int rank = std::atoi(argv[2]);
    if (rank < 0 || rank >= kWorldSize) return 2;
    try {
        return run_rank(rank, id);
    } catch (const std::exception& e) {
        std::printf("rank %d: FAIL: %s\n", rank, e.what());
        return 1;
    }
}
