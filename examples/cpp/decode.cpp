// A decode step in C++17 with the header-only wrapper dsa_indexer.hpp: RAII handles and exceptions.
//
// One batch, two ways: the engine path (dsa_topk_paged on a K cache in our own memory) and the owned-cache
// path (the library holds the cache; we write tokens into it by slot and call dsa_topk). Both must agree.
// Keys and queries are small integers (exact in fp8) with scale 1, so scores are exact and both paths
// must return the same indices. Then a rejected call, caught as dsa::Error.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <dsa_indexer.hpp>

namespace {

constexpr int kHeads = 64, kDim = 128, kPage = 64, kTopk = 8;
constexpr int kPageBytes = kPage * (kDim + 4);  // P keys of D fp8 bytes, then P fp32 scales

// fp8 e4m3 codes of the integers -3..3: sign bit 0x80, 1.0 = 0x38, 2.0 = 0x40, 3.0 = 0x44.
uint8_t fp8_of_small_int(int v) {
    static const uint8_t magnitude[] = {0x00, 0x38, 0x40, 0x44};
    return uint8_t((v < 0 ? 0x80 : 0x00) | magnitude[v < 0 ? -v : v]);
}

// A tiny deterministic generator, so that the example prints the same thing everywhere.
struct Lcg {
    uint32_t state;
    int next_small() {  // -3..3
        state = state * 1664525u + 1013904223u;
        return int(state >> 24) % 7 - 3;
    }
};

}  // namespace

int main() {
    if (!dsa::library_matches_header()) {
        std::fprintf(stderr, "libdsa_indexer %d does not serve this header (%d)\n", dsa_version(), DSA_VERSION_NUMBER);
        return 1;
    }
    const std::vector<int32_t> seq_lens = {300, 5, 64};
    const int batch = int(seq_lens.size()), max_pages = 5, num_pages = 12;
    // Each sequence's logical pages in scattered physical pages; unused entries stay 0 (never read).
    const std::vector<int32_t> block_table = {7, 2, 9, 0, 4,  //
                                              11, 0, 0, 0, 0,  //
                                              3, 0, 0, 0, 0};
    Lcg rng{42};
    std::vector<uint8_t> k_cache(size_t(num_pages) * kPageBytes, 0);
    std::vector<int64_t> slots;  // the owned cache is written by slot = page * P + offset
    std::vector<uint8_t> keys;
    std::vector<float> scales;
    for (int b = 0; b < batch; ++b) {
        for (int p = 0; p < seq_lens[size_t(b)]; ++p) {
            const int page = block_table[size_t(b * max_pages + p / kPage)], offset = p % kPage;
            uint8_t* key = &k_cache[size_t(page) * kPageBytes + size_t(offset) * kDim];
            for (int d = 0; d < kDim; ++d) key[d] = fp8_of_small_int(rng.next_small());
            const float scale = 1.0f;
            std::memcpy(&k_cache[size_t(page) * kPageBytes + kPage * kDim + 4 * size_t(offset)], &scale, 4);
            slots.push_back(int64_t(page) * kPage + offset);
            keys.insert(keys.end(), key, key + kDim);
            scales.push_back(scale);
        }
    }
    std::vector<uint8_t> q(size_t(batch) * kHeads * kDim);
    for (uint8_t& x : q) x = fp8_of_small_int(rng.next_small());
    std::vector<float> weights(size_t(batch) * kHeads);
    for (float& w : weights) w = float(rng.next_small());

    dsa_topk_params_t params = dsa::topk_params();  // H 64, D 128, P 64, next_n 1
    params.topk = kTopk;
    params.flags = DSA_TOPK_SORTED;
    dsa_paged_inputs_t inputs = dsa::paged_inputs();
    inputs.batch_size = batch;
    inputs.max_pages = max_pages;
    inputs.block_table_stride = max_pages;
    inputs.q = q.data();
    inputs.weights = weights.data();
    inputs.seq_lens = seq_lens.data();
    inputs.block_table = block_table.data();
    std::vector<int32_t> engine(size_t(batch) * kTopk), owned(engine.size());
    std::vector<float> engine_scores(engine.size());

    try {
        dsa::Context context;  // CPU backend; dsa::Context::on_devices({0}) would be GPU 0

        // Engine path: our cache, our memory.
        dsa_paged_inputs_t engine_inputs = inputs;
        engine_inputs.num_pages = num_pages;
        engine_inputs.page_stride_bytes = kPageBytes;
        engine_inputs.k_cache = k_cache.data();
        context.topk_paged(params, engine_inputs, dsa::topk_outputs(engine.data(), engine_scores.data()));

        // Owned-cache path: declared after the context, so destroyed before it.
        dsa::Cache cache(context, num_pages, kPage, kDim);
        cache.write(slots.data(), keys.data(), scales.data(), int64_t(slots.size()));
        context.topk(cache, params, inputs, dsa::topk_outputs(owned.data()));

        // A rejected call throws dsa::Error with the status and the library's message.
        try {
            params.num_heads = 48;
            context.topk_paged(params, engine_inputs, dsa::topk_outputs(engine.data()));
            std::printf("num_heads 48 was accepted?\n");
            return 1;
        } catch (const dsa::Error& e) {
            std::printf("num_heads 48 -> %s (status %d): %s\n", dsa_status_string(e.status()), int(e.status()),
                        e.message().c_str());
            if (e.status() != DSA_STATUS_UNSUPPORTED) return 1;
        }
    } catch (const dsa::Error& e) {
        std::fprintf(stderr, "dsa_indexer: %s\n", e.what());
        return 1;
    }

    for (int b = 0; b < batch; ++b) {
        std::printf("sequence %d (%d tokens):", b, int(seq_lens[size_t(b)]));
        for (int i = 0; i < kTopk; ++i) {
            const size_t at = size_t(b * kTopk + i);
            std::printf(" %d(%g)", int(engine[at]), double(engine_scores[at]));
        }
        std::printf("\n");
    }
    const bool same = engine == owned;
    std::printf("%s\n", same ? "cpp example: OK (engine path == owned-cache path)"
                             : "cpp example: WRONG (the two paths differ)");
    return same ? 0 : 1;
}
