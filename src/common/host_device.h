// Marks small inline functions that both the host code and the kernels use.
#pragma once

#if defined(__CUDACC__)
#  define DSA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#  define DSA_HOST_DEVICE inline
#endif
