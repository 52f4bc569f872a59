// Rejected input: the right status, a message naming the problem, nothing written (SPEC section 4).
#include <cstring>
#include <functional>

#include "test_cpu_common.hpp"

using namespace dsa_test;

namespace {

template <class Call>
struct BadInput {
    const char* what;
    dsa_status_t status;
    const char* message_part;
    std::function<void(Call&)> apply;
};

// The pieces of one valid call, each of which a BadInput breaks. Outputs are poisoned; `arena` is memory
// that a test may use to make outputs overlap a copy of an input.
template <class Case>
struct CallPieces {
    Case c;
    dsa_topk_params_t params;
    TopkOutput out;
    dsa_topk_outputs_t outputs;
    const dsa_topk_params_t* params_arg = &params;
    const dsa_topk_outputs_t* outputs_arg = &outputs;
    dsa_context_t context_override = nullptr;
    bool null_context = false;
    void* stream = nullptr;
    Buffer<uint8_t> arena;

    CallPieces(Case&& made, int k) : c(std::move(made)), params(c.params(k, kSorted)), out(c.rows(), k, true),
                                     outputs(out.outputs()) {}
    CallPieces(const CallPieces&) = delete;

    dsa_context_t context(dsa_context_t ctx) const { return null_context ? nullptr : ctx; }
    int64_t output_bytes() const { return c.rows() * params.topk * 4; }

    // A copy of an input array placed so that it overlaps the last 16 bytes of a new output buffer.
    template <class In, class Out>
    const In* input_overlapping_output(const In* input, size_t count, Out*& output) {
        const size_t offset = size_t(output_bytes()) - 16;
        arena.assign(offset + count * sizeof(In) + 64, kPoisonByte);
        std::memcpy(arena.data() + offset, input, count * sizeof(In));
        output = reinterpret_cast<Out*>(arena.data());
        return reinterpret_cast<const In*>(arena.data() + offset);
    }
};

struct PagedCall : CallPieces<PagedCase> {
    dsa_paged_inputs_t inputs;
    const dsa_paged_inputs_t* inputs_arg = &inputs;

    // Rows: 3 sequences x next_n 2; sequence 0 fills 1.25 pages, sequence 1 part of one, sequence 2 none.
    PagedCall() : CallPieces(random_paged(layout_of(32, 32, 2), {40, 3, 0}, 131), 8), inputs(c.inputs()) {}
    dsa_status_t run(dsa_context_t ctx) {
        return dsa_topk_paged(context(ctx), params_arg, inputs_arg, outputs_arg, nullptr, 0, stream);
    }
    std::vector<uint8_t> snapshot() const {
        std::vector<uint8_t> all;
        for (const auto& part : {bytes_of(c.q), bytes_of(c.k_cache), bytes_of(c.weights), bytes_of(c.seq_lens),
                                 bytes_of(c.block_table), bytes_of(arena)})
            all.insert(all.end(), part.begin(), part.end());
        return all;
    }
    int32_t& table(int32_t seq, int64_t column) { return c.block_table[size_t(seq * c.table_stride + column)]; }
};

struct RaggedCall : CallPieces<RaggedCase> {
    dsa_ragged_inputs_t inputs;
    const dsa_ragged_inputs_t* inputs_arg = &inputs;

    RaggedCall() : CallPieces(make_case(), 8), inputs(c.inputs()) {}
    static RaggedCase make_case() {
        std::vector<std::pair<int32_t, int32_t>> windows = causal_windows({30, 20}, {3, 2});
        windows.emplace_back(5, 5);
        return random_ragged(32, 50, windows, 132);
    }
    dsa_status_t run(dsa_context_t ctx) {
        return dsa_topk_ragged(context(ctx), params_arg, inputs_arg, outputs_arg, nullptr, 0, stream);
    }
    std::vector<uint8_t> snapshot() const {
        std::vector<uint8_t> all;
        for (const auto& part : {bytes_of(c.q), bytes_of(c.k), bytes_of(c.k_scale), bytes_of(c.weights),
                                 bytes_of(c.row_start), bytes_of(c.row_end), bytes_of(arena)})
            all.insert(all.end(), part.begin(), part.end());
        return all;
    }
};

template <class Call>
void expect_all_rejected(const std::vector<BadInput<Call>>& cases) {
    Context ctx;
    {
        Call valid;  // the unbroken call must succeed, or the rejections below prove nothing
        const dsa_status_t status = valid.run(ctx.get());
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
    }
    for (const BadInput<Call>& bad : cases) {
        Call call;
        bad.apply(call);
        const std::vector<uint8_t> before = call.snapshot();
        const dsa_status_t status = call.run(ctx.get());
        INFO(bad.what << " -> " << describe_status(status));
        CHECK(status == bad.status);
        CHECK(message_contains(bad.message_part));
        CHECK(call.out.untouched());
        CHECK(bool(call.snapshot() == before));
    }
}

template <class Call>
std::vector<BadInput<Call>> bad_params_common() {
    auto set = [](auto field, auto value) { return [=](Call& call) { call.params.*field = value; }; };
    using P = dsa_topk_params_t;
    return {
        {"params NULL", DSA_STATUS_INVALID_ARGUMENT, "params", [](Call& call) { call.params_arg = nullptr; }},
        {"outputs NULL", DSA_STATUS_INVALID_ARGUMENT, "outputs", [](Call& call) { call.outputs_arg = nullptr; }},
        {"context NULL", DSA_STATUS_INVALID_ARGUMENT, "context", [](Call& call) { call.null_context = true; }},
        {"num_heads 16", DSA_STATUS_UNSUPPORTED, "num_heads", set(&P::num_heads, 16)},
        {"num_heads 128", DSA_STATUS_UNSUPPORTED, "num_heads", set(&P::num_heads, 128)},
        {"num_heads 0", DSA_STATUS_UNSUPPORTED, "num_heads", set(&P::num_heads, 0)},
        {"head_dim 64", DSA_STATUS_UNSUPPORTED, "head_dim", set(&P::head_dim, 64)},
        {"head_dim 256", DSA_STATUS_UNSUPPORTED, "head_dim", set(&P::head_dim, 256)},
        {"topk 0", DSA_STATUS_UNSUPPORTED, "topk", set(&P::topk, 0)},
        {"topk -3", DSA_STATUS_UNSUPPORTED, "topk", set(&P::topk, -3)},
        {"topk 2049", DSA_STATUS_UNSUPPORTED, "topk", set(&P::topk, 2049)},
        {"flags bit 3", DSA_STATUS_INVALID_ARGUMENT, "flags", set(&P::flags, 0x8u)},
        {"flags bit 31", DSA_STATUS_INVALID_ARGUMENT, "flags", set(&P::flags, 0x80000001u)},
        {"outputs->indices NULL", DSA_STATUS_INVALID_ARGUMENT, "indices",
         [](Call& call) { call.outputs.indices = nullptr; }},
        {"outputs->indices misaligned", DSA_STATUS_INVALID_ARGUMENT, "indices",
         [](Call& call) { call.outputs.indices = reinterpret_cast<int32_t*>(reinterpret_cast<char*>(call.outputs.indices) + 1); }},
        {"outputs->scores misaligned", DSA_STATUS_INVALID_ARGUMENT, "scores",
         [](Call& call) { call.outputs.scores = reinterpret_cast<float*>(reinterpret_cast<char*>(call.outputs.scores) + 2); }},
        {"scores overlap indices", DSA_STATUS_INVALID_ARGUMENT, "overlap",
         [](Call& call) { call.outputs.scores = reinterpret_cast<float*>(call.outputs.indices + 4); }},
        {"scores are indices", DSA_STATUS_INVALID_ARGUMENT, "overlap",
         [](Call& call) { call.outputs.scores = reinterpret_cast<float*>(call.outputs.indices); }},
        {"scores overlap weights", DSA_STATUS_INVALID_ARGUMENT, "weights",
         [](Call& call) { call.outputs.scores = call.c.weights.data(); }},
        {"a stream on a CPU context", DSA_STATUS_INVALID_ARGUMENT, "stream",
         [](Call& call) { call.stream = &call.params; }},
        {"a NaN weight", DSA_STATUS_INVALID_ARGUMENT, "NaN",
         [](Call& call) { call.c.weights[call.c.weights.size() - 3] = kNaN; }},
    };
}

}  // namespace

TEST_CASE("paged calls reject bad input and write nothing", "[cpu][validation][paged]") {
    using C = PagedCall;
    std::vector<BadInput<C>> cases = bad_params_common<C>();
    const int64_t min_stride = 32 * (kHeadDim + 4);
    const std::vector<BadInput<C>> paged_only = {
        {"inputs NULL", DSA_STATUS_INVALID_ARGUMENT, "inputs", [](C& call) { call.inputs_arg = nullptr; }},
        {"page_size 16", DSA_STATUS_UNSUPPORTED, "page_size", [](C& call) { call.params.page_size = 16; }},
        {"page_size 128", DSA_STATUS_UNSUPPORTED, "page_size", [](C& call) { call.params.page_size = 128; }},
        {"page_size 1 (prefill layout only)", DSA_STATUS_UNSUPPORTED, "page_size", [](C& call) { call.params.page_size = 1; }},
        {"next_n 0", DSA_STATUS_UNSUPPORTED, "next_n", [](C& call) { call.params.next_n = 0; }},
        {"next_n 5", DSA_STATUS_UNSUPPORTED, "next_n", [](C& call) { call.params.next_n = 5; }},
        {"ABSOLUTE_INDICES on a paged call", DSA_STATUS_INVALID_ARGUMENT, "ABSOLUTE",
         [](C& call) { call.params.flags |= kAbsolute; }},
        {"batch_size -1", DSA_STATUS_INVALID_ARGUMENT, "batch_size", [](C& call) { call.inputs.batch_size = -1; }},
        {"max_pages -1", DSA_STATUS_INVALID_ARGUMENT, "max_pages", [](C& call) { call.inputs.max_pages = -1; }},
        {"num_pages -1", DSA_STATUS_INVALID_ARGUMENT, "num_pages", [](C& call) { call.inputs.num_pages = -1; }},
        {"block_table_stride below max_pages", DSA_STATUS_INVALID_ARGUMENT, "block_table_stride",
         [](C& call) { call.inputs.block_table_stride = call.inputs.max_pages - 1; }},
        {"max_pages * P beyond int32", DSA_STATUS_UNSUPPORTED, "max_pages", [](C& call) {
             call.inputs.max_pages = std::numeric_limits<int32_t>::max() / 32 + 1;
             call.inputs.block_table_stride = call.inputs.max_pages;
         }},
        {"num_pages * P beyond int32", DSA_STATUS_UNSUPPORTED, "num_pages",
         [](C& call) { call.inputs.num_pages = (int64_t(1) << 31) / 32 + 1; }},
        {"page_stride_bytes below P * (D + 4)", DSA_STATUS_INVALID_ARGUMENT, "page_stride_bytes",
         [=](C& call) { call.inputs.page_stride_bytes = min_stride - 16; }},
        {"page_stride_bytes not a multiple of 16", DSA_STATUS_INVALID_ARGUMENT, "page_stride_bytes",
         [=](C& call) { call.inputs.page_stride_bytes = min_stride + 8; }},
        {"page_stride_bytes 0", DSA_STATUS_INVALID_ARGUMENT, "page_stride_bytes",
         [](C& call) { call.inputs.page_stride_bytes = 0; }},
        {"q NULL", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = nullptr; }},
        {"k_cache NULL", DSA_STATUS_INVALID_ARGUMENT, "k_cache", [](C& call) { call.inputs.k_cache = nullptr; }},
        {"weights NULL", DSA_STATUS_INVALID_ARGUMENT, "weights", [](C& call) { call.inputs.weights = nullptr; }},
        {"seq_lens NULL", DSA_STATUS_INVALID_ARGUMENT, "seq_lens", [](C& call) { call.inputs.seq_lens = nullptr; }},
        {"block_table NULL", DSA_STATUS_INVALID_ARGUMENT, "block_table", [](C& call) { call.inputs.block_table = nullptr; }},
        {"q misaligned", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = call.c.q.data() + 1; }},
        {"q 8-byte aligned only", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = call.c.q.data() + 8; }},
        {"k_cache misaligned", DSA_STATUS_INVALID_ARGUMENT, "k_cache",
         [](C& call) { call.inputs.k_cache = call.c.k_cache.data() + 4; }},
        {"weights misaligned", DSA_STATUS_INVALID_ARGUMENT, "weights", [](C& call) {
             call.inputs.weights = reinterpret_cast<const float*>(reinterpret_cast<const char*>(call.c.weights.data()) + 2);
         }},
        {"seq_lens misaligned", DSA_STATUS_INVALID_ARGUMENT, "seq_lens", [](C& call) {
             call.inputs.seq_lens = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(call.c.seq_lens.data()) + 1);
         }},
        {"block_table misaligned", DSA_STATUS_INVALID_ARGUMENT, "block_table", [](C& call) {
             call.inputs.block_table = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(call.c.block_table.data()) + 2);
         }},
        {"seq_len beyond max_pages * P", DSA_STATUS_INVALID_ARGUMENT, "seq_lens",
         [](C& call) { call.c.seq_lens[1] = call.inputs.max_pages * 32 + 1; }},
        {"seq_len negative", DSA_STATUS_INVALID_ARGUMENT, "seq_lens", [](C& call) { call.c.seq_lens[2] = -1; }},
        {"block-table entry -1 in a visible page", DSA_STATUS_INVALID_ARGUMENT, "block_table",
         [](C& call) { call.table(1, 0) = -1; }},
        {"block-table entry num_pages in a visible page", DSA_STATUS_INVALID_ARGUMENT, "block_table",
         [](C& call) { call.table(0, 0) = int32_t(call.c.num_pages); }},
        {"block-table entry out of range in a partly visible page", DSA_STATUS_INVALID_ARGUMENT, "block_table",
         [](C& call) { call.table(0, 1) = 1 << 30; }},
        {"indices overlap q", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) {
             call.inputs.q = call.input_overlapping_output(call.c.q.data(), call.c.q.size(), call.outputs.indices);
         }},
        {"indices overlap k_cache", DSA_STATUS_INVALID_ARGUMENT, "k_cache", [](C& call) {
             call.inputs.k_cache = call.input_overlapping_output(call.c.k_cache.data(), call.c.k_cache.size(), call.outputs.indices);
         }},
        {"indices overlap weights", DSA_STATUS_INVALID_ARGUMENT, "weights", [](C& call) {
             call.inputs.weights = call.input_overlapping_output(call.c.weights.data(), call.c.weights.size(), call.outputs.indices);
         }},
        {"indices overlap seq_lens", DSA_STATUS_INVALID_ARGUMENT, "seq_lens", [](C& call) {
             call.inputs.seq_lens = call.input_overlapping_output(call.c.seq_lens.data(), call.c.seq_lens.size(), call.outputs.indices);
         }},
        {"indices overlap block_table", DSA_STATUS_INVALID_ARGUMENT, "block_table", [](C& call) {
             call.inputs.block_table =
                 call.input_overlapping_output(call.c.block_table.data(), call.c.block_table.size(), call.outputs.indices);
         }},
        {"scores overlap k_cache", DSA_STATUS_INVALID_ARGUMENT, "k_cache", [](C& call) {
             call.inputs.k_cache = call.input_overlapping_output(call.c.k_cache.data(), call.c.k_cache.size(), call.outputs.scores);
         }},
    };
    cases.insert(cases.end(), paged_only.begin(), paged_only.end());
    expect_all_rejected(cases);
}

TEST_CASE("ragged calls reject bad input and write nothing", "[cpu][validation][ragged]") {
    using C = RaggedCall;
    std::vector<BadInput<C>> cases = bad_params_common<C>();
    auto window = [](int32_t row, int32_t start, int32_t end) {
        return [=](C& call) {
            call.c.row_start[size_t(row)] = start;
            call.c.row_end[size_t(row)] = end;
        };
    };
    const std::vector<BadInput<C>> ragged_only = {
        {"inputs NULL", DSA_STATUS_INVALID_ARGUMENT, "inputs", [](C& call) { call.inputs_arg = nullptr; }},
        {"LOGICAL_INDICES on a ragged call", DSA_STATUS_INVALID_ARGUMENT, "LOGICAL",
         [](C& call) { call.params.flags |= kLogical; }},
        {"num_rows -1", DSA_STATUS_INVALID_ARGUMENT, "num_rows", [](C& call) { call.inputs.num_rows = -1; }},
        {"num_keys -1", DSA_STATUS_INVALID_ARGUMENT, "num_keys", [](C& call) { call.inputs.num_keys = -1; }},
        {"num_keys beyond int32", DSA_STATUS_UNSUPPORTED, "num_keys",
         [](C& call) { call.inputs.num_keys = int64_t(1) << 31; }},
        {"q NULL", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = nullptr; }},
        {"k NULL", DSA_STATUS_INVALID_ARGUMENT, "k", [](C& call) { call.inputs.k = nullptr; }},
        {"k_scale NULL", DSA_STATUS_INVALID_ARGUMENT, "k_scale", [](C& call) { call.inputs.k_scale = nullptr; }},
        {"weights NULL", DSA_STATUS_INVALID_ARGUMENT, "weights", [](C& call) { call.inputs.weights = nullptr; }},
        {"row_start NULL", DSA_STATUS_INVALID_ARGUMENT, "row_start", [](C& call) { call.inputs.row_start = nullptr; }},
        {"row_end NULL", DSA_STATUS_INVALID_ARGUMENT, "row_end", [](C& call) { call.inputs.row_end = nullptr; }},
        {"q misaligned", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = call.c.q.data() + 4; }},
        {"k misaligned", DSA_STATUS_INVALID_ARGUMENT, "k", [](C& call) { call.inputs.k = call.c.k.data() + 8; }},
        {"k_scale misaligned", DSA_STATUS_INVALID_ARGUMENT, "k_scale", [](C& call) {
             call.inputs.k_scale = reinterpret_cast<const float*>(reinterpret_cast<const char*>(call.c.k_scale.data()) + 1);
         }},
        {"row_end misaligned", DSA_STATUS_INVALID_ARGUMENT, "row_end", [](C& call) {
             call.inputs.row_end = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(call.c.row_end.data()) + 2);
         }},
        {"window start > end", DSA_STATUS_INVALID_ARGUMENT, "row 2", window(2, 20, 19)},
        {"window end > N", DSA_STATUS_INVALID_ARGUMENT, "row 4", window(4, 30, 51)},
        {"window start < 0", DSA_STATUS_INVALID_ARGUMENT, "row 0", window(0, -1, 3)},
        {"indices overlap k", DSA_STATUS_INVALID_ARGUMENT, "k", [](C& call) {
             call.inputs.k = call.input_overlapping_output(call.c.k.data(), call.c.k.size(), call.outputs.indices);
         }},
        {"indices overlap k_scale", DSA_STATUS_INVALID_ARGUMENT, "k_scale", [](C& call) {
             call.inputs.k_scale = call.input_overlapping_output(call.c.k_scale.data(), call.c.k_scale.size(), call.outputs.indices);
         }},
        {"indices overlap q", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) {
             call.inputs.q = call.input_overlapping_output(call.c.q.data(), call.c.q.size(), call.outputs.indices);
         }},
        {"indices overlap row_start", DSA_STATUS_INVALID_ARGUMENT, "row_start", [](C& call) {
             call.inputs.row_start = call.input_overlapping_output(call.c.row_start.data(), call.c.row_start.size(), call.outputs.indices);
         }},
        {"scores overlap row_end", DSA_STATUS_INVALID_ARGUMENT, "row_end", [](C& call) {
             call.inputs.row_end = call.input_overlapping_output(call.c.row_end.data(), call.c.row_end.size(), call.outputs.scores);
         }},
    };
    cases.insert(cases.end(), ragged_only.begin(), ragged_only.end());
    expect_all_rejected(cases);
}

TEST_CASE("edge inputs that must be accepted", "[cpu][validation]") {
    Context ctx;
    SECTION("out-of-range block-table entries in unused columns are never read") {
        PagedCase c = random_paged(layout_of(64, 64, 2), {70, 3, 0}, 141);
        const Oracle oracle = compute_oracle(c);
        c.block_table[size_t(0 * c.table_stride + 2)] = -1;  // sequence 0 uses columns 0 and 1
        c.block_table[size_t(1 * c.table_stride + 1)] = std::numeric_limits<int32_t>::max();
        c.block_table[size_t(1 * c.table_stride + 2)] = int32_t(c.num_pages);
        for (int64_t col = 0; col < c.max_pages; ++col) c.block_table[size_t(2 * c.table_stride + col)] = -7;
        const TopkOutput out = expect_success(ctx.get(), c, 16, kSorted, true);
        CHECK(check_spec5(c, oracle, 16, kSorted, out.indices(), out.scores()) == "");
    }
    SECTION("batch_size 0 is a no-op, with or without pointers") {
        dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
        dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
        inputs.page_stride_bytes = 64 * (kHeadDim + 4);
        TopkOutput out(1, 2048, true);
        dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
        CHECK(dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
        outputs = out.outputs();
        CHECK(dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
        CHECK(out.untouched());
    }
    SECTION("num_rows 0 is a no-op; ragged calls ignore page_size and next_n") {
        dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
        dsa_ragged_inputs_t inputs = DSA_RAGGED_INPUTS_INIT;
        dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
        CHECK(dsa_topk_ragged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);

        const RaggedCase c = random_ragged(32, 200, causal_windows({200}, {4}), 142);
        const TopkOutput reference = expect_success(ctx.get(), c, 20, kSorted, true);
        for (auto [page_size, next_n] : {std::pair{7, 0}, std::pair{1, 9}, std::pair{-1, -1}}) {
            INFO("page_size " << page_size << ", next_n " << next_n);
            params = c.params(20, kSorted);
            params.page_size = page_size;
            params.next_n = next_n;
            const dsa_ragged_inputs_t in = c.inputs();
            TopkOutput out(c.rows(), 20, true);
            outputs = out.outputs();
            CHECK(dsa_topk_ragged(ctx.get(), &params, &in, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
            CHECK(out.same_bits(reference));
        }
    }
    SECTION("empty sequences need no block table nor cache") {
        PagedCase c = random_paged(layout_of(64, 64, 3), {0, 0, 0}, 144);
        dsa_topk_params_t params = c.params(4, kSorted);
        dsa_paged_inputs_t inputs = c.inputs();
        inputs.max_pages = 0;
        inputs.block_table_stride = 0;
        inputs.block_table = nullptr;
        inputs.num_pages = 0;
        inputs.k_cache = nullptr;
        TopkOutput out(c.rows(), 4, true);
        const dsa_topk_outputs_t outputs = out.outputs();
        CHECK(dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
        CHECK(check_valid(c, 4, kSorted, out.indices(), out.scores()) == "");  // all padding
    }
    SECTION("a ragged batch whose rows are all empty") {
        const RaggedCase c = random_ragged(64, 10, {{0, 0}, {10, 10}, {4, 4}}, 143);
        const TopkOutput out = expect_success(ctx.get(), c, 5, 0, true);
        CHECK(check_valid(c, 5, 0, out.indices(), out.scores()) == "");
    }
}

TEST_CASE("workspace size queries return 0 on the CPU backend", "[cpu][api]") {
    Context ctx;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    dsa_paged_inputs_t paged = DSA_PAGED_INPUTS_INIT;  // only sizes are read: pointers may be NULL
    paged.batch_size = 4096;
    paged.max_pages = 16384;
    paged.block_table_stride = 16384;
    paged.num_pages = 100000;
    dsa_ragged_inputs_t ragged = DSA_RAGGED_INPUTS_INIT;
    ragged.num_rows = 8192;
    ragged.num_keys = 1 << 20;
    size_t bytes = 12345;
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, &paged, &bytes) == DSA_STATUS_SUCCESS);
    CHECK(bytes == 0);
    bytes = 12345;
    CHECK(dsa_topk_ragged_workspace_size(ctx.get(), &params, &ragged, &bytes) == DSA_STATUS_SUCCESS);
    CHECK(bytes == 0);

    bytes = 777;
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, &paged, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_paged_workspace_size(nullptr, &params, &paged, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), nullptr, &paged, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, nullptr, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_ragged_workspace_size(ctx.get(), &params, &ragged, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
    params.topk = 0;
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, &paged, &bytes) == DSA_STATUS_UNSUPPORTED);
    CHECK(dsa_topk_ragged_workspace_size(ctx.get(), &params, &ragged, &bytes) == DSA_STATUS_UNSUPPORTED);
    params.topk = 2048;
    paged.batch_size = -1;
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, &paged, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    ragged.num_keys = -1;
    CHECK(dsa_topk_ragged_workspace_size(ctx.get(), &params, &ragged, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(bytes == 777);  // failed queries leave the result alone
}
