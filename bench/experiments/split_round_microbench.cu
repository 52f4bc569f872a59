// The cost of one round of a selection shared by the parts of a split decode row (NOTES "Session 26", Next 5):
// with a cooperative launch every CTA of a call is resident at once, so the P CTAs holding parts of one row could
// select it together, level by level, instead of leaving it to the last arrival. Each level is a round: every
// part counts its keys' 11-bit bins, the row's counts are added up, and every part finds the bin that holds the
// row's k-th best key. This program times such rounds alone, one CTA per SM, 640 threads (as the fused kernel's
// <64,1>), 512 of them holding one key each (a part of 8 tiles of 64 positions), in two ways:
//   global  P parts of a row add their counts into the row's histogram in global memory (one atomic per
//           non-zero bin), arrive on the row's counter (release) and wait until it reaches P (acquire), then read
//           the histogram back; launched cooperatively, P = 8 and 16
//   cluster the row's parts form a thread block cluster (P = 8, and 16 where the GPU schedules it): each part
//           sums its slice of the bins over the peers' shared memory (DSMEM) behind a cluster barrier, then reads
//           every slice behind a second one
// What it answers: whether a round costs well under 1 us (then ~4 rounds, three levels and the output offsets,
// undercut the last arrival's 1.3 us ticket + 1.3 us row load + 5.7 us selection on the 8x8192 timeline), and
// which of the two exchanges is cheaper.
//
// Not built by CMake. On the GPU machine, from the repository root:
//   nvcc -std=c++17 -O3 -arch=sm_90a bench/experiments/split_round_microbench.cu -o /tmp/srb && /tmp/srb
// Prints per variant the median (and max) over CTAs and rounds of each phase in us (at the clock the CTAs' own
// clock64 / %globaltimer ratio gives) and of the whole round; checks every part's bin against the host's (the
// bin where the count of keys in it and above first reaches k). Exit status 1 on a wrong bin or a CUDA error.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <cooperative_groups.h>
#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

namespace cg = cooperative_groups;

namespace {

constexpr int kThreads = 640;
constexpr int kKeysPerPart = 512;  // one per thread of the first 512
constexpr int kBins = 2048;        // the key's top 11 bits
constexpr int kRounds = 4;         // each on the keys xor-ed with another constant: another histogram
constexpr int kTopk = 2048;
constexpr int kMarks = 5;          // round start, local counts done, row counts added, row complete, bin found
constexpr int kSmemBytes = 150 * 1024;  // dynamic shared memory: one CTA per SM
using Scan = cub::BlockScan<int, kThreads>;

__device__ __forceinline__ unsigned long long globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__host__ __device__ inline uint32_t round_key(uint32_t key, int round) { return key ^ (0x9E3779B9u * uint32_t(round)); }

// The bin of the row's k-th best key from its full histogram h (bins in shared memory), or -1 when the row holds
// fewer than k keys (*found, set to -1 by the caller before the barrier that publishes h). Thread t < 512 takes
// bins 2047 - 4t .. 2044 - 4t, so an exclusive scan counts the keys above them.
__device__ int find_threshold_bin(const int* h, int k, Scan::TempStorage& scan, int* found) {
    const int t = threadIdx.x;
    int c[4], sum = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        c[j] = t < kBins / 4 ? h[kBins - 1 - 4 * t - j] : 0;
        sum += c[j];
    }
    int before;
    Scan(scan).ExclusiveSum(sum, before);
    if (before < k && before + sum >= k) {
        int acc = before;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            acc += c[j];
            if (acc >= k) {
                *found = kBins - 1 - 4 * t - j;
                break;
            }
        }
    }
    __syncthreads();
    return *found;
}

struct Out {
    int* bins;                  // [parts total][kRounds]
    unsigned long long* marks;  // [parts total][kRounds][kMarks] clock64
    unsigned long long* span;   // [parts total][4]: clock64 and %globaltimer at the first and last mark
};

__device__ void record_span(const Out& out, int cta, unsigned long long c0, unsigned long long g0) {
    if (threadIdx.x != 0) return;
    out.span[cta * 4 + 0] = c0;
    out.span[cta * 4 + 1] = clock64();
    out.span[cta * 4 + 2] = g0;
    out.span[cta * 4 + 3] = globaltimer();
}

// A round's end in both variants: the threshold bin of the row's gathered counts h (written before this call),
// with its mark.
__device__ void finish_round(const int* h, Scan::TempStorage& scan, int* found, const Out& out, int cta, int r) {
    if (threadIdx.x == 0) *found = -1;
    __syncthreads();
    const int bin = find_threshold_bin(h, kTopk, scan, found);
    if (threadIdx.x == 0) {
        out.marks[(int64_t(cta) * kRounds + r) * kMarks + 4] = clock64();
        out.bins[cta * kRounds + r] = bin;
    }
}

// Parts of a row exchange counts through global memory: row_hist [rows][kRounds][kBins] and row_count
// [rows][kRounds], zeroed before the launch.
__global__ void __launch_bounds__(kThreads, 1)
    global_rounds(const uint32_t* keys, int parts, int rows, int* row_hist, int* row_count, Out out) {
    extern __shared__ int h[];  // kBins counts (the rest only keeps a second CTA off the SM)
    __shared__ Scan::TempStorage scan;
    __shared__ int found;
    const int cta = blockIdx.x, row = cta / parts, t = threadIdx.x;
    if (row >= rows) return;
    const uint32_t key = t < kKeysPerPart ? keys[int64_t(cta) * kKeysPerPart + t] : 0;
    unsigned long long* marks = out.marks + int64_t(cta) * kRounds * kMarks;
    const unsigned long long c0 = clock64(), g0 = globaltimer();
    for (int r = 0; r < kRounds; ++r) {
        for (int i = t; i < kBins; i += kThreads) h[i] = 0;
        __syncthreads();
        if (t == 0) marks[r * kMarks + 0] = clock64();
        if (t < kKeysPerPart) atomicAdd(&h[round_key(key, r) >> 21], 1);
        __syncthreads();
        if (t == 0) marks[r * kMarks + 1] = clock64();
        int* gh = row_hist + (int64_t(row) * kRounds + r) * kBins;
        for (int i = t; i < kBins; i += kThreads)
            if (h[i]) atomicAdd(gh + i, h[i]);
        __syncthreads();  // every add before thread 0's release
        if (t == 0) {
            int* count = row_count + row * kRounds + r;
            marks[r * kMarks + 2] = clock64();
            int before;
            asm volatile("atom.add.release.gpu.s32 %0, [%1], 1;" : "=r"(before) : "l"(count) : "memory");
            int seen = before + 1;
            while (seen < parts) asm volatile("ld.acquire.gpu.s32 %0, [%1];" : "=r"(seen) : "l"(count) : "memory");
            marks[r * kMarks + 3] = clock64();
        }
        __syncthreads();
        for (int i = t; i < kBins; i += kThreads) h[i] = __ldcg(gh + i);
        finish_round(h, scan, &found, out, cta, r);
    }
    record_span(out, cta, c0, g0);
}

// Parts of a row form a cluster of `parts` CTAs (the launch's cluster dimension) and exchange counts through
// distributed shared memory: part q sums the peers' counts of bins [q * kBins / parts, (q + 1) * kBins / parts).
__global__ void __launch_bounds__(kThreads, 1)
    cluster_rounds(const uint32_t* keys, int parts, int rows, Out out) {
    extern __shared__ int smem[];
    int* h = smem;             // this part's counts
    int* slice = smem + kBins;  // this part's slice of the row's counts
    int* row_h = smem + 2 * kBins;  // the row's counts, gathered
    __shared__ Scan::TempStorage scan;
    __shared__ int found;
    cg::cluster_group cluster = cg::this_cluster();
    const int cta = blockIdx.x, row = cta / parts, t = threadIdx.x, q = int(cluster.block_rank());
    const int width = kBins / parts;
    const uint32_t key = t < kKeysPerPart ? keys[int64_t(cta) * kKeysPerPart + t] : 0;
    unsigned long long* marks = out.marks + int64_t(cta) * kRounds * kMarks;
    const unsigned long long c0 = clock64(), g0 = globaltimer();
    for (int r = 0; r < kRounds; ++r) {
        for (int i = t; i < kBins; i += kThreads) h[i] = 0;
        cluster.sync();  // the peers are done reading the last round's counts and slices
        if (t == 0) marks[r * kMarks + 0] = clock64();
        if (t < kKeysPerPart) atomicAdd(&h[round_key(key, r) >> 21], 1);
        cluster.sync();
        if (t == 0) marks[r * kMarks + 1] = clock64();
        for (int i = t; i < width; i += kThreads) {
            int s = 0;
            for (int peer = 0; peer < parts; ++peer) s += cluster.map_shared_rank(h, peer)[q * width + i];
            slice[i] = s;
        }
        if (t == 0) marks[r * kMarks + 2] = clock64();
        cluster.sync();
        if (t == 0) marks[r * kMarks + 3] = clock64();
        for (int i = t; i < kBins; i += kThreads) row_h[i] = cluster.map_shared_rank(slice, i / width)[i % width];
        finish_round(row_h, scan, &found, out, cta, r);
    }
    cluster.sync();  // no part exits while a peer may still read its shared memory
    record_span(out, cta, c0, g0);
    (void)row;
}

bool ok(cudaError_t e, const char* what) {
    if (e != cudaSuccess) std::printf("%s: %s\n", what, cudaGetErrorString(e));
    return e == cudaSuccess;
}

int host_bin(const std::vector<uint32_t>& keys, int first, int count, int round) {
    std::vector<int> h(kBins, 0);
    for (int i = 0; i < count; ++i) ++h[round_key(keys[first + i], round) >> 21];
    int acc = 0;
    for (int b = kBins - 1; b >= 0; --b)
        if ((acc += h[b]) >= kTopk) return b;
    return -1;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// One variant: launch, check every bin, print the phases. Returns false on a CUDA error or a wrong bin; a launch
// the GPU cannot schedule (`optional`: a cluster of 16) is reported and passes.
bool run(const char* name, bool cluster, int parts, int sms, const uint32_t* d_keys, const std::vector<uint32_t>& keys,
         bool optional = false) {
    const int rows = sms / parts, ctas = rows * parts;
    int *d_bins = nullptr, *d_hist = nullptr, *d_count = nullptr;
    unsigned long long *d_marks = nullptr, *d_span = nullptr;
    bool good = ok(cudaMalloc(&d_bins, size_t(ctas) * kRounds * 4), "cudaMalloc") &&
                ok(cudaMalloc(&d_marks, size_t(ctas) * kRounds * kMarks * 8), "cudaMalloc") &&
                ok(cudaMalloc(&d_span, size_t(ctas) * 4 * 8), "cudaMalloc") &&
                ok(cudaMalloc(&d_hist, size_t(rows) * kRounds * kBins * 4), "cudaMalloc") &&
                ok(cudaMalloc(&d_count, size_t(rows) * kRounds * 4), "cudaMalloc") &&
                ok(cudaMemset(d_hist, 0, size_t(rows) * kRounds * kBins * 4), "cudaMemset") &&
                ok(cudaMemset(d_count, 0, size_t(rows) * kRounds * 4), "cudaMemset");
    const Out out{d_bins, d_marks, d_span};
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(unsigned(ctas));
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = kSmemBytes;
    cudaLaunchAttribute attribute{};
    config.attrs = &attribute;
    config.numAttrs = 1;
    if (good && cluster) {
        good = ok(cudaFuncSetAttribute(cluster_rounds, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes), "attr") &&
               ok(cudaFuncSetAttribute(cluster_rounds, cudaFuncAttributeNonPortableClusterSizeAllowed, 1), "attr");
        attribute.id = cudaLaunchAttributeClusterDimension;
        attribute.val.clusterDim.x = unsigned(parts);
        attribute.val.clusterDim.y = attribute.val.clusterDim.z = 1;
        int clusters = 0;
        if (good && cudaOccupancyMaxActiveClusters(&clusters, cluster_rounds, &config) == cudaSuccess)
            std::printf("%s: %d clusters of %d resident at once (of %d launched)\n", name, clusters, parts, rows);
        cudaGetLastError();
        const cudaError_t launched =
            good ? cudaLaunchKernelEx(&config, cluster_rounds, static_cast<const uint32_t*>(d_keys), parts, rows, out)
                 : cudaSuccess;
        if (good && launched != cudaSuccess && optional) {
            std::printf("%s: not launched (%s)\n", name, cudaGetErrorString(launched));
            cudaGetLastError();
            cudaFree(d_bins), cudaFree(d_marks), cudaFree(d_span), cudaFree(d_hist), cudaFree(d_count);
            return true;
        }
        good = good && ok(launched, name);
    } else if (good) {
        good = ok(cudaFuncSetAttribute(global_rounds, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes), "attr");
        attribute.id = cudaLaunchAttributeCooperative;
        attribute.val.cooperative = 1;
        good = good && ok(cudaLaunchKernelEx(&config, global_rounds, static_cast<const uint32_t*>(d_keys), parts, rows,
                                             d_hist, d_count, out),
                          name);
    }
    good = good && ok(cudaDeviceSynchronize(), name);
    std::vector<int> bins(size_t(ctas) * kRounds);
    std::vector<unsigned long long> marks(size_t(ctas) * kRounds * kMarks), span(size_t(ctas) * 4);
    good = good && ok(cudaMemcpy(bins.data(), d_bins, bins.size() * 4, cudaMemcpyDeviceToHost), "copy") &&
           ok(cudaMemcpy(marks.data(), d_marks, marks.size() * 8, cudaMemcpyDeviceToHost), "copy") &&
           ok(cudaMemcpy(span.data(), d_span, span.size() * 8, cudaMemcpyDeviceToHost), "copy");
    cudaFree(d_bins), cudaFree(d_marks), cudaFree(d_span), cudaFree(d_hist), cudaFree(d_count);
    if (!good) return false;

    int wrong = 0;
    for (int row = 0; row < rows; ++row)
        for (int r = 0; r < kRounds; ++r) {
            const int expect = host_bin(keys, row * parts * kKeysPerPart, parts * kKeysPerPart, r);
            for (int part = 0; part < parts; ++part) wrong += bins[(row * parts + part) * kRounds + r] != expect;
        }
    // cycles per ns from the CTAs' own spans
    std::vector<double> ratio;
    for (int c = 0; c < ctas; ++c)
        if (span[c * 4 + 3] > span[c * 4 + 2]) ratio.push_back(double(span[c * 4 + 1] - span[c * 4 + 0]) / double(span[c * 4 + 3] - span[c * 4 + 2]));
    const double cycles_per_us = median(ratio) * 1000.0;
    static const char* kPhase[] = {"local counts", "row counts added", "row complete (wait)", "bin found"};
    std::printf("%s (%d rows of %d parts, %d keys a row, %d rounds; %.0f MHz): %s\n", name, rows, parts,
                parts * kKeysPerPart, kRounds, cycles_per_us, wrong ? "WRONG BINS" : "bins exact");
    for (int phase = 0; phase <= kMarks - 1; ++phase) {
        std::vector<double> v;
        for (int c = 0; c < ctas; ++c)
            for (int r = 0; r < kRounds; ++r) {
                const unsigned long long* m = &marks[(size_t(c) * kRounds + r) * kMarks];
                v.push_back(phase < kMarks - 1 ? double(m[phase + 1] - m[phase]) / cycles_per_us
                                               : double(m[kMarks - 1] - m[0]) / cycles_per_us);
            }
        std::printf("  %-22s median %6.3f us  max %6.3f us\n", phase < kMarks - 1 ? kPhase[phase] : "round", median(v),
                    *std::max_element(v.begin(), v.end()));
    }
    return wrong == 0;
}

}  // namespace

int main() {
    int sms = 0;
    if (!ok(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "device")) return 1;
    std::mt19937 rng(26);
    std::vector<uint32_t> keys(size_t(sms) * kKeysPerPart);
    for (auto& k : keys) k = uint32_t(rng());
    uint32_t* d_keys = nullptr;
    if (!ok(cudaMalloc(&d_keys, keys.size() * 4), "cudaMalloc") ||
        !ok(cudaMemcpy(d_keys, keys.data(), keys.size() * 4, cudaMemcpyHostToDevice), "copy"))
        return 1;
    bool good = true;
    for (int rep = 0; rep < 2; ++rep) {  // the second launch of each: code and clocks warm
        std::printf("== launch %d\n", rep + 1);
        good &= run("global P=16", false, 16, sms, d_keys, keys);
        good &= run("global P=8", false, 8, sms, d_keys, keys);
        good &= run("cluster P=8", true, 8, sms, d_keys, keys);
        good &= run("cluster P=16", true, 16, sms, d_keys, keys, true);  // may not launch: 16 SMs in one GPC
    }
    cudaFree(d_keys);
    return good ? 0 : 1;
}
