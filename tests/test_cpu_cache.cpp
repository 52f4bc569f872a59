// The owned cache on the CPU backend: writes, reads, repeated slots, rejected input.
#include <algorithm>
#include <cstring>
#include <functional>

#include "test_cpu_common.hpp"

using namespace dsa_test;

namespace {

// An owned cache holding exactly the pages of a paged case (slot = physical page * P + offset).
class OwnedCache {
public:
    OwnedCache(dsa_context_t ctx, const PagedCase& c) : page_size_(c.layout.page_size) {
        dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
        config.num_pages = c.num_pages;
        config.page_size = c.layout.page_size;
        const dsa_status_t status = dsa_cache_create(ctx, &config, &cache_);
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
        num_slots_ = c.num_pages * page_size_;
    }
    ~OwnedCache() { dsa_cache_destroy(cache_); }
    dsa_cache_t get() const { return cache_; }
    int64_t num_slots() const { return num_slots_; }

    // Every slot's key and scale, in the order of `slots`.
    void read(const std::vector<int64_t>& slots, std::vector<uint8_t>& keys, std::vector<float>& scales) const {
        keys.assign(slots.size() * kHeadDim, 0xEE);
        scales.assign(slots.size(), -1.0f);
        REQUIRE(dsa_cache_read(cache_, slots.data(), keys.data(), scales.data(), int64_t(slots.size()), DSA_MEMORY_HOST) ==
                DSA_STATUS_SUCCESS);
    }
    std::vector<int64_t> all_slots() const {
        std::vector<int64_t> slots(static_cast<size_t>(num_slots_));
        for (int64_t s = 0; s < num_slots_; ++s) slots[size_t(s)] = s;
        return slots;
    }

private:
    int page_size_;
    int64_t num_slots_ = 0;
    dsa_cache_t cache_ = nullptr;
};

// Keys and scales of the given slots of a paged case's caller-owned cache.
void slots_of_case(const PagedCase& c, const std::vector<int64_t>& slots, std::vector<uint8_t>& keys, std::vector<float>& scales) {
    const int P = c.layout.page_size;
    keys.resize(slots.size() * kHeadDim);
    scales.resize(slots.size());
    for (size_t i = 0; i < slots.size(); ++i) {
        const uint8_t* page = c.k_cache.data() + (slots[i] / P) * c.page_stride;
        std::memcpy(&keys[i * kHeadDim], page + (slots[i] % P) * kHeadDim, kHeadDim);
        std::memcpy(&scales[i], page + int64_t(P) * kHeadDim + (slots[i] % P) * 4, 4);
    }
}

dsa_status_t run_owned(dsa_context_t ctx, dsa_cache_t cache, const dsa_topk_params_t& params,
                       const dsa_paged_inputs_t& inputs, TopkOutput& out) {
    const dsa_topk_outputs_t outputs = out.outputs();
    return dsa_topk(ctx, cache, &params, &inputs, &outputs);
}

dsa_paged_inputs_t owned_inputs(const PagedCase& c) {
    dsa_paged_inputs_t in = c.inputs();
    in.k_cache = nullptr;
    in.num_pages = 0;
    in.page_stride_bytes = 0;
    return in;
}

}  // namespace

TEST_CASE("owned cache: written tokens read back exactly and give the caller-owned results", "[cpu][cache]") {
    const int page_size = GENERATE(32, 64);
    Context ctx;
    PagedLayout layout = layout_of(64, page_size, 2);
    layout.page_padding_bytes = 32;  // the caller-owned copy may be padded; the owned cache is not
    const PagedCase c = random_paged(layout, {100, 37, 0, 260}, seed_of(page_size, 3, 3));
    OwnedCache cache(ctx.get(), c);

    std::vector<uint8_t> keys, read_keys;
    std::vector<float> scales, read_scales;
    const std::vector<int64_t> all = cache.all_slots();
    cache.read(all, read_keys, read_scales);  // fresh: zero keys and scales
    CHECK(std::all_of(read_keys.begin(), read_keys.end(), [](uint8_t b) { return b == 0; }));
    CHECK(std::all_of(read_scales.begin(), read_scales.end(), [](float s) { return s == 0.0f; }));

    // Written in a shuffled order, in two calls.
    std::vector<int64_t> shuffled = all;
    Rng rng(5);
    std::shuffle(shuffled.begin(), shuffled.end(), rng.engine());
    slots_of_case(c, shuffled, keys, scales);
    const int64_t half = int64_t(shuffled.size()) / 2;
    REQUIRE(dsa_cache_write(cache.get(), shuffled.data(), keys.data(), scales.data(), half, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    REQUIRE(dsa_cache_write(cache.get(), shuffled.data() + half, keys.data() + half * kHeadDim, scales.data() + half,
                            int64_t(shuffled.size()) - half, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    cache.read(shuffled, read_keys, read_scales);
    CHECK(bool(read_keys == keys));
    CHECK(std::memcmp(read_scales.data(), scales.data(), scales.size() * 4) == 0);

    for_each_variant({1, 64, 2048}, {0u, kSorted | kLogical}, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", " << flag_names(flags));
        const TopkOutput expected = expect_success(ctx.get(), c, k, flags, with_scores);
        TopkOutput out(c.rows(), k, with_scores);
        const dsa_status_t status = run_owned(ctx.get(), cache.get(), c.params(k, flags), owned_inputs(c), out);
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
        CHECK(out.same_bits(expected));
        CHECK(out.guards_intact());
    });
}

TEST_CASE("owned cache: a repeated slot takes its last occurrence", "[cpu][cache]") {
    Context ctx;
    const PagedCase c(layout_of(32, 32, 1), {64}, 151);
    OwnedCache cache(ctx.get(), c);
    const std::vector<int64_t> slots = {5, 9, 5, 40, 5};
    std::vector<uint8_t> keys(slots.size() * kHeadDim);
    for (size_t i = 0; i < slots.size(); ++i) std::fill_n(&keys[i * kHeadDim], kHeadDim, uint8_t(0x30 + i));
    const std::vector<float> scales = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
    REQUIRE(dsa_cache_write(cache.get(), slots.data(), keys.data(), scales.data(), 5, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    std::vector<uint8_t> read_keys;
    std::vector<float> read_scales;
    cache.read({5, 9, 40}, read_keys, read_scales);
    CHECK(read_scales == std::vector<float>{5.0f, 2.0f, 4.0f});
    CHECK(read_keys[0] == 0x34);
    CHECK(read_keys[kHeadDim] == 0x31);
    CHECK(read_keys[2 * kHeadDim] == 0x33);
}

TEST_CASE("owned cache: bad input is rejected and changes nothing", "[cpu][cache][validation]") {
    Context ctx;
    const PagedCase c = random_paged(layout_of(32, 32, 1), {50, 20}, 161);
    OwnedCache cache(ctx.get(), c);
    std::vector<uint8_t> keys;
    std::vector<float> scales;
    const std::vector<int64_t> all = cache.all_slots();
    slots_of_case(c, all, keys, scales);
    REQUIRE(dsa_cache_write(cache.get(), all.data(), keys.data(), scales.data(), int64_t(all.size()), DSA_MEMORY_HOST) ==
            DSA_STATUS_SUCCESS);
    auto cache_unchanged = [&] {
        std::vector<uint8_t> now_keys;
        std::vector<float> now_scales;
        cache.read(all, now_keys, now_scales);
        return now_keys == keys && std::memcmp(now_scales.data(), scales.data(), scales.size() * 4) == 0;
    };

    SECTION("writes and reads") {
        std::vector<uint8_t> new_keys(3 * kHeadDim, 0x40);
        const std::vector<float> new_scales = {7.0f, 7.0f, 7.0f};
        const int64_t slots_count = cache.num_slots();
        const std::vector<std::pair<const char*, std::vector<int64_t>>> bad_slots = {
            {"slot num_slots last", {0, 1, slots_count}},
            {"slot -1 first", {-1, 1, 2}},
            {"slot far out", {3, int64_t(1) << 40, 4}},
        };
        for (const auto& [what, slots] : bad_slots) {
            INFO(what);
            CHECK(dsa_cache_write(cache.get(), slots.data(), new_keys.data(), new_scales.data(), 3, DSA_MEMORY_HOST) ==
                  DSA_STATUS_INVALID_ARGUMENT);
            CHECK(message_contains("slots"));
            CHECK(cache_unchanged());
            std::vector<uint8_t> out_keys(3 * kHeadDim, kPoisonByte);
            std::vector<float> out_scales(3, 1.5f);
            CHECK(dsa_cache_read(cache.get(), slots.data(), out_keys.data(), out_scales.data(), 3, DSA_MEMORY_HOST) ==
                  DSA_STATUS_INVALID_ARGUMENT);
            CHECK(std::all_of(out_keys.begin(), out_keys.end(), [](uint8_t b) { return b == kPoisonByte; }));
            CHECK(out_scales == std::vector<float>(3, 1.5f));
        }
        const std::vector<int64_t> good = {1, 2, 3};
        for (int32_t device : {0, 1, -2}) {
            INFO("memory_device " << device);
            CHECK(dsa_cache_write(cache.get(), good.data(), new_keys.data(), new_scales.data(), 3, device) ==
                  DSA_STATUS_INVALID_ARGUMENT);
            CHECK(message_contains("memory_device"));
            std::vector<float> out_scales(3, 1.5f);
            CHECK(dsa_cache_read(cache.get(), good.data(), new_keys.data(), out_scales.data(), 3, device) ==
                  DSA_STATUS_INVALID_ARGUMENT);
            CHECK(out_scales == std::vector<float>(3, 1.5f));
        }
        CHECK(dsa_cache_write(cache.get(), nullptr, new_keys.data(), new_scales.data(), 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), good.data(), nullptr, new_scales.data(), 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), good.data(), new_keys.data(), nullptr, 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), good.data(), new_keys.data(), new_scales.data(), -1, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(nullptr, good.data(), new_keys.data(), new_scales.data(), 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_read(nullptr, good.data(), new_keys.data(), nullptr, 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_read(cache.get(), good.data(), new_keys.data(), nullptr, 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), nullptr, nullptr, nullptr, 0, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
        CHECK(cache_unchanged());
    }
    SECTION("creation") {
        dsa_cache_t out = reinterpret_cast<dsa_cache_t>(uintptr_t(0x5A5A5A50));
        const dsa_cache_t untouched = out;
        auto expect_create = [&](dsa_cache_config_t config, dsa_status_t status, const char* part) {
            CHECK(dsa_cache_create(ctx.get(), &config, &out) == status);
            CHECK(message_contains(part));
            CHECK(out == untouched);
        };
        dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
        expect_create(config, DSA_STATUS_INVALID_ARGUMENT, "num_pages");  // 0 pages
        config.num_pages = -4;
        expect_create(config, DSA_STATUS_INVALID_ARGUMENT, "num_pages");
        config.num_pages = 4;
        config.page_size = 16;
        expect_create(config, DSA_STATUS_UNSUPPORTED, "page_size");
        config.page_size = 64;
        config.head_dim = 64;
        expect_create(config, DSA_STATUS_UNSUPPORTED, "head_dim");
        config.head_dim = 128;
        config.num_pages = (int64_t(1) << 31) / 64 + 1;
        expect_create(config, DSA_STATUS_UNSUPPORTED, "num_pages");
        config.num_pages = 4;
        CHECK(dsa_cache_create(ctx.get(), nullptr, &out) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_create(ctx.get(), &config, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_create(nullptr, &config, &out) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(out == untouched);
    }
    SECTION("top-k calls") {
        Context other_ctx;
        const dsa_topk_params_t params = c.params(8, 0);
        const dsa_paged_inputs_t inputs = owned_inputs(c);
        const std::vector<std::tuple<const char*, dsa_status_t, std::function<dsa_status_t(TopkOutput&)>>> bad_calls = {
            {"k_cache given", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 dsa_paged_inputs_t in = inputs;
                 in.k_cache = c.k_cache.data();
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"num_pages given", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 dsa_paged_inputs_t in = inputs;
                 in.num_pages = c.num_pages;
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"page_stride_bytes given", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 dsa_paged_inputs_t in = inputs;
                 in.page_stride_bytes = c.page_stride;
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"page_size differs from the cache's", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 dsa_topk_params_t p = params;
                 p.page_size = 64;
                 return run_owned(ctx.get(), cache.get(), p, inputs, out);
             }},
            {"head_dim unsupported", DSA_STATUS_UNSUPPORTED, [&](TopkOutput& out) {
                 dsa_topk_params_t p = params;
                 p.head_dim = 64;
                 return run_owned(ctx.get(), cache.get(), p, inputs, out);
             }},
            {"block-table entry beyond the cache", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 Buffer<int32_t> table = c.block_table;
                 table[0] = int32_t(c.num_pages);
                 dsa_paged_inputs_t in = inputs;
                 in.block_table = table.data();
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"a NaN weight", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 Buffer<float> weights = c.weights;
                 weights[7] = kNaN;
                 dsa_paged_inputs_t in = inputs;
                 in.weights = weights.data();
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"the cache of another context", DSA_STATUS_INVALID_ARGUMENT,
             [&](TopkOutput& out) { return run_owned(other_ctx.get(), cache.get(), params, inputs, out); }},
            {"cache NULL", DSA_STATUS_INVALID_ARGUMENT,
             [&](TopkOutput& out) { return run_owned(ctx.get(), nullptr, params, inputs, out); }},
            {"context NULL", DSA_STATUS_INVALID_ARGUMENT,
             [&](TopkOutput& out) { return run_owned(nullptr, cache.get(), params, inputs, out); }},
        };
        {
            TopkOutput out(c.rows(), 8, true);
            REQUIRE(run_owned(ctx.get(), cache.get(), params, inputs, out) == DSA_STATUS_SUCCESS);
        }
        for (const auto& [what, status, call] : bad_calls) {
            INFO(what);
            TopkOutput out(c.rows(), 8, true);
            CHECK(call(out) == status);
            CHECK(out.untouched());
        }
        CHECK(cache_unchanged());
    }
}
