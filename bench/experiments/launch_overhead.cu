// What a call's launches cost on their own, before any work (bench/NOTES.md, session 35): empty kernels shaped as
// decode_fused_kernel's (132 CTAs of 640 threads, ~200 KB of dynamic shared memory, one CTA per SM), launched
// normally, cooperatively, or behind a small kernel as a programmatic dependent launch (the two-launch path's
// shape), each timed as dsa_bench times a call: CUDA events around graph replays, one launch a replay from an
// idle GPU ("single") and ten a replay, per launch ("b2b"). Standalone (not built by CMake):
//   nvcc -std=c++17 -O3 -arch=sm_90a bench/experiments/launch_overhead.cu -o launch_overhead && ./launch_overhead
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#define CK(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            std::fprintf(stderr, "%s at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e_)); \
            std::exit(1);                                                                         \
        }                                                                                         \
    } while (0)

// Each CTA's thread 0 writes one word (through shared memory when it has some), so the launch is not empty
// to the compiler.
__global__ void big_kernel(int* sink, int with_smem) {
    extern __shared__ int smem[];
    if (threadIdx.x == 0) {
        if (with_smem) smem[0] = blockIdx.x;
        sink[blockIdx.x] = with_smem ? smem[0] : int(blockIdx.x);
    }
}

// As big_kernel, behind a programmatic dependent launch: waits for the kernel before it first.
__global__ void big_kernel_behind(int* sink) {
    extern __shared__ int smem[];
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (threadIdx.x == 0) {
        smem[0] = blockIdx.x;
        sink[blockIdx.x] = smem[0];
    }
}

// The clear kernel's shape: a few words per CTA.
__global__ void small_kernel(int* sink) {
    if (threadIdx.x < 8) sink[1024 + blockIdx.x * 8 + threadIdx.x] = 0;
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Median us per launch-group of `reps` graph replays, each replay holding `per_graph` groups.
static double time_graph(cudaStream_t s, int per_graph, const std::function<void()>& group) {
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < per_graph; ++i) group();
    CK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t e;
    CK(cudaGraphInstantiate(&e, g, 0));
    CK(cudaGraphDestroy(g));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<double> t;
    for (int i = 0; i < 60; ++i) {
        CK(cudaEventRecord(a, s));
        CK(cudaGraphLaunch(e, s));
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (i >= 10) t.push_back(ms * 1e3 / per_graph);
    }
    CK(cudaGetLastError());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaGraphExecDestroy(e);
    return median(t);
}

int main() {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int ctas = prop.multiProcessorCount, threads = 640, smem = 200 * 1024;
    std::printf("device: %s, %d SMs\n", prop.name, ctas);
    CK(cudaFuncSetAttribute(big_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    CK(cudaFuncSetAttribute(big_kernel_behind, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int* sink;
    CK(cudaMalloc(&sink, 1 << 20));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

    // A launch of the big kernel's shape with one launch attribute (or none: nullptr).
    auto launch_shaped = [&](auto kernel, int dyn, const cudaLaunchAttribute* attribute, auto... args) {
        cudaLaunchConfig_t c{};
        c.gridDim = dim3(ctas);
        c.blockDim = dim3(threads);
        c.dynamicSmemBytes = dyn;
        c.stream = s;
        c.attrs = const_cast<cudaLaunchAttribute*>(attribute);
        c.numAttrs = attribute ? 1 : 0;
        CK(cudaLaunchKernelEx(&c, kernel, args...));
    };
    cudaLaunchAttribute cooperative_attr{}, pdl_attr{};
    cooperative_attr.id = cudaLaunchAttributeCooperative;
    cooperative_attr.val.cooperative = 1;
    pdl_attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    pdl_attr.val.programmaticStreamSerializationAllowed = 1;
    auto launch_big = [&](bool cooperative, int dyn) {
        launch_shaped(big_kernel, dyn, cooperative ? &cooperative_attr : nullptr, sink, dyn > 0 ? 1 : 0);
    };
    auto launch_pair = [&] {
        small_kernel<<<ctas, 64, 0, s>>>(sink);
        launch_shaped(big_kernel_behind, smem, &pdl_attr, sink);
    };
    struct Variant {
        const char* name;
        std::function<void()> group;
    };
    const Variant variants[] = {
        {"normal, 640 threads, 200 KB", [&] { launch_big(false, smem); }},
        {"cooperative, 640 threads, 200 KB", [&] { launch_big(true, smem); }},
        {"small kernel + PDL 640 threads, 200 KB", launch_pair},
        {"normal, 640 threads, no smem", [&] { launch_big(false, 0); }},
        {"cooperative, 640 threads, no smem", [&] { launch_big(true, 0); }},
        {"small kernel alone (132 x 64)", [&] { small_kernel<<<ctas, 64, 0, s>>>(sink); }},
    };
    std::printf("%-42s %9s %9s\n", "launch", "single_us", "b2b_us");
    for (int round = 0; round < 2; ++round)
        for (const Variant& v : variants)
            std::printf("%-42s %9.2f %9.2f\n", v.name, time_graph(s, 1, v.group), time_graph(s, 10, v.group));
    return 0;
}
