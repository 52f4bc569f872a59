// Bitwise identical results across runs and CPU thread counts.
#include <algorithm>
#include <cstring>

#include "test_cpu_common.hpp"

using namespace dsa_test;

TEST_CASE("results are bitwise identical across runs and CPU thread counts", "[cpu][determinism]") {
    // Sequences longer than one scoring chunk, so that threads split work inside a sequence.
    const PagedCase paged = random_paged(layout_of(64, 64, 2), {5000, 4100, 300, 0, 2049}, 171);
    const RaggedCase ragged = random_ragged(64, 6000, causal_windows({5000, 1000}, {3, 3}), 172);
    for (auto [k, flags] : {std::pair{2048, kSorted}, std::pair{512, 0u}}) {
        INFO("k " << k << ", " << flag_names(flags));
        Context reference_ctx(1);
        const TopkOutput paged_reference = expect_success(reference_ctx.get(), paged, k, flags, true);
        const TopkOutput ragged_reference = expect_success(reference_ctx.get(), ragged, k, flags | (flags ? kAbsolute : 0), true);
        CHECK(expect_success(reference_ctx.get(), paged, k, flags, true).same_bits(paged_reference));
        for (int32_t threads : {2, 3}) {
            INFO(threads << " threads");
            Context ctx(threads);
            CHECK(expect_success(ctx.get(), paged, k, flags, true).same_bits(paged_reference));
            CHECK(expect_success(ctx.get(), ragged, k, flags | (flags ? kAbsolute : 0), true).same_bits(ragged_reference));
        }
        // A sequence's rows do not depend on the rest of the batch.
        for (auto [first, count] : {std::pair{0, 1}, std::pair{1, 3}, std::pair{4, 1}}) {
            INFO("sequences " << first << " .. " << first + count - 1 << " alone");
            const dsa_topk_params_t params = paged.params(k, flags);
            const dsa_paged_inputs_t inputs = sub_batch(paged.inputs(), paged.heads(), paged.layout.next_n, first, count);
            TopkOutput out(int64_t(count) * paged.layout.next_n, k, true);
            const dsa_topk_outputs_t outputs = out.outputs();
            REQUIRE(dsa_topk_paged(reference_ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
            const int64_t offset = int64_t(first) * paged.layout.next_n * k, values = out.rows * k;
            CHECK(std::equal(out.indices(), out.indices() + values, paged_reference.indices() + offset));
            CHECK(std::memcmp(out.scores(), paged_reference.scores() + offset, size_t(values) * 4) == 0);
        }
    }
}
