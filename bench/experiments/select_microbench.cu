// The decode kernel's register selection alone (kernels/group_select.cuh, as Selector::select_in_registers in
// kernels/decode_fused.cu runs it for a row of at most 8192 positions): one CTA per row of n scores read from L2,
// its best k in position order, timed by phase with clock64. What it answers: how long the last arrival's
// selection takes without the rest of the fused kernel (session 10's timeline: ~7.7 us for 8192 positions, in
// %globaltimer steps of ~1 us); whether a CTA's second selection (instruction cache warm, another row's scores) is
// faster than its first; what the group's size (threads x keys per thread) changes, down to one warpgroup of 128
// (the prefill kernel's final selections: 32 keys a thread up to 4096 candidates, 24 up to 3072); and whether a
// DRAM stream running meanwhile (the fused kernels' K stream; here a kernel of light CTAs beside the selection's,
// reading a 2 GB buffer) slows the selection's L2 round trips and barriers ("under load" lines: the stream's own
// bandwidth is printed, and whether it covered every selection). "striped" lines lay the row over the threads so
// that loads are coalesced and the kept items' slots nearly consecutive (Layout below), with its own keep.
//
// Not built by CMake. On the GPU machine, from the repository root:
//   nvcc -std=c++17 -O3 -arch=sm_90a -Isrc -I. bench/experiments/select_microbench.cu -o /tmp/smb && /tmp/smb
// Prints, per variant (group size) and row length, the median over CTAs of each phase in us (at the clock the
// CTAs' own clock64 / %globaltimer ratio gives) and of the whole selection (and its max), for the first launch's
// first and second selection and the second launch's first; checks every row against a host selection (the same
// rule: larger key first, the smaller position among equal keys; output in position order). Exit status 1 on a
// wrong row.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include "common/order_key.h"
#include "kernels/group_select.cuh"

using dsa::kernels::GroupSelect;
using dsa::kernels::kSelectBcast;
using dsa::kernels::kSelectBins;

namespace {

constexpr int kTopk = 2048;
constexpr int kPhases = 5;  // start, keys in hand, refined, kept (picked), written
constexpr int kReps = 2;    // selections per CTA: the first (cold), the second (another row, warm code)

#define CUDA_OK(x)                                                                              \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) {                                                                \
            std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));    \
            std::exit(2);                                                                       \
        }                                                                                       \
    } while (0)

struct BlockSync {
    __device__ void operator()() const { __syncthreads(); }
};

__device__ __forceinline__ unsigned long long globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
    return t;
}

// Rows r = rep * gridDim.x + blockIdx.x of `scores` (n each, 16-byte aligned rows); out: k positions per row.
// clocks: [row][kPhases] clock64; spans: [row] globaltimer ns of the whole selection (for the clock rate), starts:
// [row] its %globaltimer start.
// How a variant lays a row over its threads. Blocked: thread t holds positions [t * Items, (t + 1) * Items), as
// select_in_registers and the prefill kernel's selections do. Striped: warp w's lane l holds, as items 4q .. 4q + 3,
// positions w * 32 * Items + 128 q + 4 l + (0 .. 3), so each float4 load of a warp reads 512 contiguous bytes
// (blocked: 32 loads 16 x Items bytes apart), and kept items of one store land in nearby slots. Staged: blocked,
// but the row comes in as striped's coalesced loads (consecutive threads, consecutive 16-byte words, every load
// before the first conversion), staged as keys in dynamic shared memory (word w at w ^ ((w >> 3) & 7): conflict-free
// for the writers' runs and for the readers' words 64 bytes apart) and read back blocked after one barrier, as
// bench/experiments/decode-register-selection-staged-loads.patch does in the decode kernel (Threads x Items = 8192).
enum class Layout { blocked, striped, staged };

// keep_in_order for the striped layout: within a warp, position order is (q, lane, c), so an item's slot follows
// from one scan of the threads' counts (GroupSelect::exclusive_scan, read at each warp's lane 0: the warps before)
// and the warp's ballots of each group of four (the lanes before). The kept items of one store land in nearby slots.
template <int Threads, int Items, class Keep>
__device__ void keep_striped(GroupSelect<Threads, BlockSync>& group, const uint32_t (&key)[Items], uint32_t prefix,
                             int shift, int need, Keep keep) {
    const int lane = threadIdx.x % 32;
    const unsigned before_lane = (1u << lane) - 1u;
    const typename GroupSelect<Threads, BlockSync>::PrefixRange range(prefix, shift);
    const uint32_t highest = range.lowest + range.span;
    auto is_equal = [&](uint32_t x) { return x <= highest && x - range.lowest <= range.span; };
    int gt = 0, eq = 0;  // this thread's (ballots here would be kept live for the second pass's)
#pragma unroll
    for (int e = 0; e < Items; ++e) {
        gt += key[e] > highest;
        eq += is_equal(key[e]);
    }
    int total;
    const int before = __shfl_sync(0xffffffffu, group.exclusive_scan(gt | (eq << 16), total), 0);
    int gt_group = before & 0xffff, eq_group = before >> 16;  // before this warp's current group of four
#pragma unroll
    for (int q = 0; q < Items / 4; ++q) {
        int gt_at = gt_group, eq_at = eq_group;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const unsigned above = __ballot_sync(0xffffffffu, key[4 * q + c] > highest);
            const unsigned equal = __ballot_sync(0xffffffffu, is_equal(key[4 * q + c]));
            gt_at += __popc(above & before_lane);
            eq_at += __popc(equal & before_lane);
            gt_group += __popc(above);
            eq_group += __popc(equal);
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) {  // this lane's own items of the group, in position order
            const bool above = key[4 * q + c] > highest, equal = !above && is_equal(key[4 * q + c]);
            if (above || (equal && eq_at < need)) keep(gt_at + min(eq_at, need), 4 * q + c);
            gt_at += above;
            eq_at += equal;
        }
    }
}

template <int Threads, int Items, Layout L>
__global__ void __launch_bounds__(Threads) select_rows(const float* scores, int n, int k, int32_t* out,
                                                       long long* clocks, long long* spans, long long* starts) {
    static_assert(Items % 4 == 0);
    __shared__ int hist[2][kSelectBins];
    __shared__ int warp_total[2][Threads / 32];
    __shared__ int bcast[kSelectBcast];
    __shared__ uint64_t picked[kTopk];
    extern __shared__ uint4 staged[];  // Layout::staged only: Threads x Items keys
    const int t = threadIdx.x;
    GroupSelect<Threads, BlockSync> group{{}, t, warp_total, bcast};
    for (int rep = 0; rep < kReps; ++rep) {
        const int64_t row = int64_t(rep) * gridDim.x + blockIdx.x;
        const float* s = scores + row * n;
        for (int i = t; i < kSelectBins; i += Threads) hist[0][i] = hist[1][i] = 0;
        __syncthreads();
        long long c[kPhases];
        const unsigned long long g0 = globaltimer();
        c[0] = clock64();
        // As select_in_registers: every load before the first conversion; padding key 0 past n. Item e's position:
        constexpr bool kBlocked = L != Layout::striped;
        const int i0 = kBlocked ? t * Items : (t / 32) * 32 * Items + (t % 32) * 4;
        auto position = [&](int e) { return kBlocked ? i0 + e : i0 + (e / 4) * 128 + e % 4; };
        uint32_t key[Items];
        if constexpr (L == Layout::staged) {
            static_assert(Threads * Items == 8192, "the staging holds one row of 8192");
            auto staged_at = [](int w) { return w ^ ((w >> 3) & 7); };
            const int last = (n - 1) / 4;  // a word past the row reads its last word again
            float4 f[Items / 4];
#pragma unroll
            for (int q = 0; q < Items / 4; ++q)
                f[q] = __ldcg(reinterpret_cast<const float4*>(s) + min(t + q * Threads, last));
#pragma unroll
            for (int q = 0; q < Items / 4; ++q) {
                const int w = t + q * Threads;
                auto key_at = [&](float x, int c) { return 4 * w + c < n ? dsa::score_order_key(x) : 0u; };
                staged[staged_at(w)] = make_uint4(key_at(f[q].x, 0), key_at(f[q].y, 1), key_at(f[q].z, 2),
                                                  key_at(f[q].w, 3));
            }
            __syncthreads();
#pragma unroll
            for (int q = 0; q < Items / 4; ++q) {
                const uint4 u = staged[staged_at(t * (Items / 4) + q)];
                key[4 * q] = u.x, key[4 * q + 1] = u.y, key[4 * q + 2] = u.z, key[4 * q + 3] = u.w;
            }
        } else {
            float4 f[Items / 4];
#pragma unroll
            for (int q = 0; q < Items / 4; ++q)
                f[q] = position(4 * q) < n ? __ldcg(reinterpret_cast<const float4*>(s + position(4 * q)))
                                           : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int q = 0; q < Items / 4; ++q) {
                const float x[4] = {f[q].x, f[q].y, f[q].z, f[q].w};
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    key[4 * q + e] = position(4 * q + e) < n ? dsa::score_order_key(x[e]) : 0u;
            }
        }
        __syncthreads();
        c[1] = clock64();
        uint32_t prefix = 0;
        int shift = 32, need = k, above = 0, ties = Threads * Items;
        group.refine(key, prefix, shift, need, above, ties, hist[0], hist[1]);
        c[2] = clock64();
        auto keep = [&](int slot, int e) { picked[slot] = (uint64_t(key[e]) << 32) | uint64_t(~uint32_t(position(e))); };
        if constexpr (kBlocked)
            group.keep_in_order(key, prefix, shift, need, ties, keep);
        else
            keep_striped(group, key, prefix, shift, need, keep);
        __syncthreads();
        c[3] = clock64();
        for (int i = t; i < k; i += Threads) out[row * k + i] = int32_t(dsa::candidate_position(picked[i]));
        __syncthreads();
        c[4] = clock64();
        const unsigned long long g1 = globaltimer();
        if (t == 0) {
            for (int p = 0; p < kPhases; ++p) clocks[row * kPhases + p] = c[p];
            spans[row] = (long long)(g1 - g0);
            starts[row] = (long long)g0;
        }
        __syncthreads();
    }
}

// The load: every thread streams 16-byte reads over buf (n4 a power of two, evict-first) with 8 in flight until
// `ns` of %globaltimer have passed; window[0] / [1] get the first CTA's start and end, *bytes the bytes read.
__global__ void __launch_bounds__(256) stream_reads(const float4* buf, size_t n4, unsigned long long ns,
                                                    unsigned long long* window, unsigned long long* bytes,
                                                    float* sink) {
    const unsigned long long start = globaltimer(), end = start + ns;
    const size_t mask = n4 - 1, stride = size_t(gridDim.x) * blockDim.x;
    size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    float acc = 0.0f;
    unsigned long long reads = 0;
    while (globaltimer() < end) {
        float4 v[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = __ldcs(buf + ((i + size_t(j) * stride) & mask));
#pragma unroll
        for (int j = 0; j < 8; ++j) acc += v[j].x + v[j].y + v[j].z + v[j].w;
        i = (i + 8 * stride) & mask;
        reads += 8;
    }
    if (acc == 1.0f) *sink = acc;  // keeps the loads
    atomicAdd(bytes, reads * 16);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        window[0] = start;
        window[1] = globaltimer();
    }
}

// The host's answer for one row: the best k positions (larger key first, smaller position among equals), in
// position order.
std::vector<int32_t> expected(const float* s, int n, int k) {
    std::vector<uint64_t> c(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) c[size_t(i)] = dsa::candidate_key(s[i], uint32_t(i));
    std::nth_element(c.begin(), c.begin() + (k - 1), c.end(), std::greater<uint64_t>());
    std::vector<int32_t> pos;
    for (int i = 0; i < k; ++i) pos.push_back(int32_t(dsa::candidate_position(c[size_t(i)])));
    std::sort(pos.begin(), pos.end());
    return pos;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// The DRAM stream of the "under load" runs: a 2 GB buffer, read by 2 CTAs of 256 threads per SM.
struct Load {
    float4* buf = nullptr;
    size_t n4 = 0;
    unsigned long long *window = nullptr, *bytes = nullptr;
    float* sink = nullptr;
    cudaStream_t stream = nullptr;
    int ctas = 0;
};

template <int Threads, int Items, Layout L = Layout::blocked>
bool run(const char* name, int n, int ctas, const std::vector<float>& host_scores, const float* scores,
         const Load* load = nullptr) {
    const int rows = ctas * kReps;
    int32_t* out;
    long long *clocks, *spans, *starts;
    CUDA_OK(cudaMalloc(&out, size_t(rows) * kTopk * 4));
    CUDA_OK(cudaMalloc(&clocks, size_t(rows) * kPhases * 8));
    CUDA_OK(cudaMalloc(&spans, size_t(rows) * 8));
    CUDA_OK(cudaMalloc(&starts, size_t(rows) * 8));
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    bool covered = true;
    double stream_gbs = 0;
    // Two launches: the first runs the selection's code for the first time on each SM (fetched from memory, as
    // the fused kernel's last arrival fetches it after its tile loop's code), the second may find it cached.
    std::vector<int32_t> h_out(size_t(rows) * kTopk);
    std::vector<long long> h_clocks(size_t(rows) * kPhases * 2), h_spans(static_cast<size_t>(rows) * 2);
    for (int launch = 0; launch < 2; ++launch) {
        if (load) {  // the stream first, for 20 ms (the first launch of a kernel loads its code): the selection's
                     // launch comes while it runs
            CUDA_OK(cudaMemsetAsync(load->bytes, 0, 8, load->stream));
            stream_reads<<<load->ctas, 256, 0, load->stream>>>(load->buf, load->n4, 20000000ull, load->window,
                                                                 load->bytes, load->sink);
            CUDA_OK(cudaGetLastError());
        }
        const int staging = L == Layout::staged ? Threads * Items * 4 : 0;
        CUDA_OK(cudaFuncSetAttribute(select_rows<Threads, Items, L>, cudaFuncAttributeMaxDynamicSharedMemorySize, staging));
        select_rows<Threads, Items, L><<<ctas, Threads, staging, stream>>>(scores, n, kTopk, out, clocks, spans, starts);
        CUDA_OK(cudaGetLastError());
        CUDA_OK(cudaDeviceSynchronize());
        if (load) {
            unsigned long long window[2], bytes;
            std::vector<long long> h_starts(static_cast<size_t>(rows)), h_span(static_cast<size_t>(rows));
            CUDA_OK(cudaMemcpy(window, load->window, 16, cudaMemcpyDeviceToHost));
            CUDA_OK(cudaMemcpy(&bytes, load->bytes, 8, cudaMemcpyDeviceToHost));
            CUDA_OK(cudaMemcpy(h_starts.data(), starts, size_t(rows) * 8, cudaMemcpyDeviceToHost));
            CUDA_OK(cudaMemcpy(h_span.data(), spans, size_t(rows) * 8, cudaMemcpyDeviceToHost));
            for (int r = 0; r < rows; ++r)
                covered &= (unsigned long long)h_starts[size_t(r)] >= window[0] &&
                           (unsigned long long)(h_starts[size_t(r)] + h_span[size_t(r)]) <= window[1];
            stream_gbs = double(bytes) / double(window[1] - window[0]);
        }
        CUDA_OK(cudaMemcpy(h_clocks.data() + size_t(launch) * rows * kPhases, clocks, size_t(rows) * kPhases * 8,
                           cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(h_spans.data() + size_t(launch) * rows, spans, size_t(rows) * 8, cudaMemcpyDeviceToHost));
    }
    CUDA_OK(cudaMemcpy(h_out.data(), out, h_out.size() * 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaFree(out));
    CUDA_OK(cudaFree(clocks));
    CUDA_OK(cudaFree(spans));
    CUDA_OK(cudaFree(starts));
    CUDA_OK(cudaStreamDestroy(stream));

    int wrong = 0;
    for (int r = 0; r < rows; ++r) {
        const std::vector<int32_t> want = expected(host_scores.data() + size_t(r) * n, n, kTopk);
        if (!std::equal(want.begin(), want.end(), h_out.begin() + size_t(r) * kTopk)) ++wrong;
    }
    // Cycles per ns from the whole selections (globaltimer steps average out over the CTAs).
    double cycles = 0, ns = 0;
    for (int r = 0; r < 2 * rows; ++r) {
        cycles += double(h_clocks[size_t(r) * kPhases + kPhases - 1] - h_clocks[size_t(r) * kPhases]);
        ns += double(h_spans[size_t(r)]);
    }
    const double ghz = ns > 0 ? cycles / ns : 1.98;
    static const char* labels[kPhases - 1] = {"keys loaded", "refined", "kept (picked)", "written"};
    std::printf("%-28s n %5d: %s, SM clock %.2f GHz; medians over CTAs, us", name, n,
                wrong ? "WRONG ROWS" : "all rows right", ghz);
    if (load)
        std::printf("; under load (stream %.0f GB/s, %s)", stream_gbs,
                    covered ? "covering every selection" : "NOT covering every selection");
    std::printf("\n");
    // Code never run before on the SM: launch 1's first selection of a variant's first row length (8192) only.
    static const char* runs[3] = {"launch 1, selection 1", "launch 1, selection 2", "launch 2, selection 1"};
    for (int which = 0; which < 3; ++which) {
        const size_t first_row = which == 0 ? 0 : which == 1 ? size_t(ctas) : size_t(rows);
        std::printf("  %-34s", runs[which]);
        std::vector<double> total;
        for (int p = 1; p < kPhases; ++p) {
            std::vector<double> v;
            for (int cta = 0; cta < ctas; ++cta) {
                const size_t r = first_row + size_t(cta);
                v.push_back(double(h_clocks[r * kPhases + p] - h_clocks[r * kPhases + p - 1]));
            }
            std::printf("  %s %.2f", labels[p - 1], median(v) / ghz / 1e3);
        }
        for (int cta = 0; cta < ctas; ++cta) {
            const size_t r = first_row + size_t(cta);
            total.push_back(double(h_clocks[r * kPhases + kPhases - 1] - h_clocks[r * kPhases]));
        }
        std::printf("  | total %.2f us (max %.2f)\n", median(total) / ghz / 1e3,
                    *std::max_element(total.begin(), total.end()) / ghz / 1e3);
    }
    if (wrong) std::printf("  %d of %d rows differ from the host's selection\n", wrong, rows);
    return wrong == 0;
}

}  // namespace

int main() {
    int sms = 0;
    CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const int ctas = sms;  // one row per SM at a time, as a small batch's last arrivals
    Load load;
    load.n4 = size_t(1) << 27;  // 2 GB
    load.ctas = 2 * sms;
    CUDA_OK(cudaMalloc(&load.buf, load.n4 * 16));
    CUDA_OK(cudaMemset(load.buf, 0, load.n4 * 16));
    CUDA_OK(cudaMalloc(&load.window, 16));
    CUDA_OK(cudaMalloc(&load.bytes, 8));
    CUDA_OK(cudaMalloc(&load.sink, 4));
    CUDA_OK(cudaStreamCreateWithFlags(&load.stream, cudaStreamNonBlocking));
    bool ok = true;
    for (int n : {8192, 6400, 4096, 3072}) {
        // Scores like the benchmark's (SPEC 6 inputs give |score| up to a few hundred, mostly within +-100).
        std::mt19937_64 rng(static_cast<uint64_t>(n));
        std::normal_distribution<float> normal(0.0f, 60.0f);
        std::vector<float> host(size_t(ctas) * kReps * n);
        for (float& x : host) x = normal(rng);
        float* scores;
        CUDA_OK(cudaMalloc(&scores, host.size() * 4));
        CUDA_OK(cudaMemcpy(scores, host.data(), host.size() * 4, cudaMemcpyHostToDevice));
        ok &= run<512, 16>("512 threads x 16 (decode)", n, ctas, host, scores);
        ok &= run<512, 16, Layout::striped>("512 x 16 (decode) striped", n, ctas, host, scores);
        ok &= run<512, 16, Layout::staged>("512 x 16 (decode) staged", n, ctas, host, scores);
        ok &= run<512, 16>("512 threads x 16 (decode)", n, ctas, host, scores, &load);
        ok &= run<512, 16, Layout::staged>("512 x 16 (decode) staged", n, ctas, host, scores, &load);
        ok &= run<256, 32>("256 threads x 32", n, ctas, host, scores);
        ok &= run<1024, 8>("1024 threads x 8", n, ctas, host, scores);
        if (n <= 4096) ok &= run<512, 8>("512 threads x 8", n, ctas, host, scores);
        if (n <= 4096) {  // the prefill kernel's final selections
            ok &= run<128, 32>("128 threads x 32 (prefill)", n, ctas, host, scores);
            ok &= run<128, 32, Layout::striped>("128 x 32 (prefill) striped", n, ctas, host, scores);
            ok &= run<128, 32>("128 threads x 32 (prefill)", n, ctas, host, scores, &load);
        }
        if (n <= 3072) ok &= run<128, 24>("128 threads x 24 (prefill)", n, ctas, host, scores);
        CUDA_OK(cudaFree(scores));
    }
    CUDA_OK(cudaFree(load.buf));
    return ok ? 0 : 1;
}
