/*
 * dsa_indexer.h - the public C API of libdsa_indexer.
 *
 * The DeepSeek Sparse Attention "lightning indexer" top-k: for every query row, the k cached tokens with
 * the highest score  s_p * sum_h w[h] * relu(q[h] . k_p)  over an FP8 (e4m3) key cache. The exact
 * contract (layouts, index modes, ties, MTP rows, prefill, bad input, accuracy) is SPEC.md.
 *
 * This header is C99 and C++ compatible and names no CUDA or C++ type. Every call returns a
 * dsa_status_t; no call aborts the process or lets an exception escape. On failure the calling
 * thread's dsa_last_error_message() says what was wrong, and nothing the caller owns has been written.
 *
 * Ownership, in one place:
 *   - Handles (dsa_context_t, dsa_cache_t) are created and destroyed by the library only.
 *   - Every pointer passed in stays owned by the caller; the library keeps none of them after a call
 *     returns, except that an asynchronous GPU call (dsa_topk_paged / dsa_topk_ragged on a GPU context)
 *     reads and writes them on the caller's stream after it returns, like a CUDA kernel launch.
 *   - Strings returned by the library are owned by it (see each call for how long they stay valid).
 *
 * Thread-safety: different contexts may be used from different threads at once. Calls on one context
 * (and on the caches created from it) are serialised by the context, so sharing a context between
 * threads is safe but gives no parallelism.
 */
#ifndef DSA_INDEXER_H
#define DSA_INDEXER_H

#include <stddef.h>
#include <stdint.h>

/** Library version. DSA_VERSION_NUMBER = MAJOR * 10000 + MINOR * 100 + PATCH. The shared object's
 *  SOVERSION is the major version: a change of MAJOR is the only change that may break the ABI. */
#define DSA_VERSION_MAJOR 0
#define DSA_VERSION_MINOR 2
#define DSA_VERSION_PATCH 0
#define DSA_VERSION_NUMBER (DSA_VERSION_MAJOR * 10000 + DSA_VERSION_MINOR * 100 + DSA_VERSION_PATCH)

#if defined(_WIN32)
#  define DSA_API
#elif defined(__GNUC__)
#  define DSA_API __attribute__((visibility("default")))
#else
#  define DSA_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Status of every call. Values are fixed forever: new ones are appended, none is renumbered or reused. */
typedef enum dsa_status {
    DSA_STATUS_SUCCESS = 0,
    DSA_STATUS_INVALID_ARGUMENT = 1,       /**< null pointer, negative size, bad value, aliasing, ... */
    DSA_STATUS_UNSUPPORTED = 2,            /**< a parameter outside the supported range (SPEC section 3) */
    DSA_STATUS_OUT_OF_MEMORY = 3,          /**< host or device allocation failed */
    DSA_STATUS_NO_DEVICE = 4,              /**< a requested GPU does not exist or the build has no CUDA */
    DSA_STATUS_CUDA_ERROR = 5,             /**< the CUDA runtime reported an error (message has its text) */
    DSA_STATUS_NCCL_ERROR = 6,             /**< NCCL reported an error (message has its text) */
    DSA_STATUS_INSUFFICIENT_WORKSPACE = 7, /**< workspace_bytes below what the size query returned */
    DSA_STATUS_DEVICE_INPUT_ERROR = 8,     /**< a GPU call met a bad block-table entry or seq_len (SPEC 4) */
    DSA_STATUS_NOT_IMPLEMENTED = 9,        /**< valid request this build or backend cannot serve yet */
    DSA_STATUS_INTERNAL_ERROR = 10         /**< a library bug; please report it with the message */
} dsa_status_t;

/** Opaque handle: the backend (CPU, or a list of GPUs) with its streams, workspaces and error flags. */
typedef struct dsa_context_s* dsa_context_t;
/** Opaque handle: a paged K cache owned by the library, on its context's backend. */
typedef struct dsa_cache_s* dsa_cache_t;

/** Location tag for pointers of the owned-cache calls: host memory. */
#define DSA_MEMORY_HOST (-1)

/** An NCCL unique id (ncclUniqueId's 128 bytes), made by dsa_nccl_unique_id_create on one process and
 *  handed to the others by the caller (MPI, a socket, a file, ...). Opaque. */
#define DSA_NCCL_UNIQUE_ID_BYTES 128
typedef struct dsa_nccl_unique_id {
    char internal[DSA_NCCL_UNIQUE_ID_BYTES];
} dsa_nccl_unique_id_t;

/* ---------------------------------------------------------------------------------------------------- */
/* Version and errors                                                                                    */

/** DSA_VERSION_NUMBER of the loaded library (compare with the header's to detect a mismatch). */
DSA_API int dsa_version(void);

/** Static English name of a status ("DSA_STATUS_SUCCESS", ...); "DSA_STATUS_UNKNOWN" for other values.
 *  The string is owned by the library and valid forever. Thread-safe. */
DSA_API const char* dsa_status_string(dsa_status_t status);

/** Message of the last failed call made by the calling thread ("" when that call succeeded or no call
 *  was made). Owned by the library; valid until the calling thread's next dsa_* call. Thread-local. */
DSA_API const char* dsa_last_error_message(void);

/* ---------------------------------------------------------------------------------------------------- */
/* Context                                                                                               */

/** Makes a new NCCL unique id into *out_id (for contexts spanning processes: see dsa_context_config_t).
 *  DSA_STATUS_NOT_IMPLEMENTED when the library was built without NCCL; DSA_STATUS_NCCL_ERROR with NCCL's
 *  message when NCCL fails. */
DSA_API dsa_status_t dsa_nccl_unique_id_create(dsa_nccl_unique_id_t* out_id);

/** Context configuration. Initialise with dsa_context_config_init() (or DSA_CONTEXT_CONFIG_INIT), then
 *  set fields. New fields are only ever appended; struct_size tells the library which ones you know. */
typedef struct dsa_context_config {
    size_t struct_size;          /**< sizeof(dsa_context_config_t), set by the initialiser */
    const int32_t* device_ids;   /**< host array of CUDA device ordinals; NULL with num_devices 0 = CPU */
    int32_t num_devices;         /**< entries in device_ids; 0 selects the CPU backend */
    int32_t num_cpu_threads;     /**< CPU backend threads; 0 = one per hardware thread */
    /* since 0.2 */
    /** NULL: the context's GPUs are all in this process (one NCCL communicator over them when there are
     *  several). Otherwise this process joins a context spanning nccl_world_size processes as rank
     *  nccl_rank, with exactly one GPU (num_devices 1); every process passes the same id. Creating such a
     *  context is collective: it returns when all ranks have joined. Every call on it that moves data
     *  between ranks (dsa_cache_create/write/read/destroy, dsa_topk) is collective too: all ranks make it,
     *  in the same order, with the same arguments. */
    const dsa_nccl_unique_id_t* nccl_unique_id;
    int32_t nccl_rank;           /**< this process's rank, 0 .. nccl_world_size - 1 */
    int32_t nccl_world_size;     /**< processes in the context, >= 1 */
} dsa_context_config_t;

#define DSA_CONTEXT_CONFIG_INIT { sizeof(dsa_context_config_t), NULL, 0, 0, NULL, 0, 1 }

/** Fills *config with defaults (CPU backend, all hardware threads). config must not be NULL. */
DSA_API void dsa_context_config_init(dsa_context_config_t* config);

/** Creates a context. config: host memory, read during the call only. On success *out_context holds a
 *  new handle that the caller destroys with dsa_context_destroy. Asking for a GPU that does not exist,
 *  or any GPU when the library was built without CUDA, fails with DSA_STATUS_NO_DEVICE: there is no
 *  hidden fallback to the CPU. A repeated device id is DSA_STATUS_INVALID_ARGUMENT. */
DSA_API dsa_status_t dsa_context_create(const dsa_context_config_t* config, dsa_context_t* out_context);

/** Destroys a context after waiting for its work. Caches created from it must be destroyed first
 *  (destroying a context that still has caches fails with DSA_STATUS_INVALID_ARGUMENT and destroys
 *  nothing). NULL is a no-op returning DSA_STATUS_SUCCESS. */
DSA_API dsa_status_t dsa_context_destroy(dsa_context_t context);

/** Replaces the context's devices (host array device_ids of num_devices entries; 0 = CPU backend).
 *  Validated fully before anything changes: on failure the context is left as it was. Fails with
 *  DSA_STATUS_INVALID_ARGUMENT while caches created from the context exist (their memory lives on the
 *  old devices), and with DSA_STATUS_UNSUPPORTED on a context spanning processes (its rank is bound to
 *  its GPU). */
DSA_API dsa_status_t dsa_context_set_devices(dsa_context_t context, const int32_t* device_ids,
                                             int32_t num_devices);

/** Number of GPUs of the context in this process (0 for the CPU backend) into *out_num_devices. */
DSA_API dsa_status_t dsa_context_num_devices(dsa_context_t context, int32_t* out_num_devices);

/** Waits for all work the context launched (GPU calls on caller streams included) and reports device-side
 *  input errors raised since the last check: DSA_STATUS_DEVICE_INPUT_ERROR when a GPU kernel met a
 *  block-table entry outside [0, num_pages) or a seq_len outside [0, max_pages * page_size] (those rows
 *  were written as padding only). Reading the flag clears it. On the CPU backend such input is rejected
 *  before any work, so this returns DSA_STATUS_SUCCESS. */
DSA_API dsa_status_t dsa_context_synchronize(dsa_context_t context);

/* ---------------------------------------------------------------------------------------------------- */
/* Parameters, inputs and outputs of a top-k call                                                        */

/** flags: report results ordered by descending score, ties by ascending position. */
#define DSA_TOPK_SORTED 0x1u
/** flags (paged only): report logical positions p instead of global slots block_table[b][p/P]*P + p%P. */
#define DSA_TOPK_LOGICAL_INDICES 0x2u
/** flags (ragged only): report absolute key numbers instead of numbers relative to row_start. */
#define DSA_TOPK_ABSOLUTE_INDICES 0x4u

/** What to compute. Initialise with dsa_topk_params_init() (or DSA_TOPK_PARAMS_INIT): H 64, D 128,
 *  P 64, k 2048, next_n 1, no flags: the FlashInfer-Bench core case. */
typedef struct dsa_topk_params {
    size_t struct_size;   /**< sizeof(dsa_topk_params_t), set by the initialiser */
    int32_t num_heads;    /**< H: 32 or 64 */
    int32_t head_dim;     /**< D: 128 */
    int32_t page_size;    /**< P: 32 or 64 (paged calls; ignored by ragged calls) */
    int32_t topk;         /**< k: 1 .. 2048 */
    int32_t next_n;       /**< query tokens per sequence, 1 .. 4 (paged calls; ignored by ragged calls) */
    uint32_t flags;       /**< DSA_TOPK_* bits; unknown bits are rejected */
} dsa_topk_params_t;

#define DSA_TOPK_PARAMS_INIT { sizeof(dsa_topk_params_t), 64, 128, 64, 2048, 1, 0u }

/** Fills *params with the defaults above. params must not be NULL. */
DSA_API void dsa_topk_params_init(dsa_topk_params_t* params);

/** Inputs of a paged decode call (SPEC section 1). Rows are r = b * next_n + j. q and k_cache must be
 *  16-byte aligned, the other arrays 4-byte aligned.
 *  Memory: for dsa_topk_paged, every pointer is in the memory of the context's backend (host memory on
 *  the CPU backend, device memory of the context's first GPU otherwise). For dsa_topk (owned cache),
 *  every pointer is host memory and k_cache must be NULL (the cache supplies the keys). */
typedef struct dsa_paged_inputs {
    size_t struct_size;          /**< sizeof(dsa_paged_inputs_t), set by the initialiser */
    int32_t batch_size;          /**< B: sequences; rows = B * next_n */
    int32_t max_pages;           /**< columns of block_table that may be used: seq_lens[b] <= max_pages * P */
    int64_t block_table_stride;  /**< elements between consecutive rows of block_table (>= max_pages) */
    int64_t num_pages;           /**< physical pages in k_cache */
    int64_t page_stride_bytes;   /**< bytes between pages of k_cache: >= P * (D + 4), multiple of 16 */
    const void* q;               /**< [B, next_n, H, D] fp8 e4m3 (OCP e4m3fn), contiguous */
    const void* k_cache;         /**< [num_pages, page_stride_bytes]: P keys of D fp8 bytes, then P fp32 scales */
    const float* weights;        /**< [B * next_n, H] fp32, contiguous */
    const int32_t* seq_lens;     /**< [B] tokens of each sequence, the next_n new ones included */
    const int32_t* block_table;  /**< [B, block_table_stride] physical page of each logical page */
} dsa_paged_inputs_t;

#define DSA_PAGED_INPUTS_INIT { sizeof(dsa_paged_inputs_t), 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL }

/** Fills *inputs with zeros and the struct size. inputs must not be NULL. */
DSA_API void dsa_paged_inputs_init(dsa_paged_inputs_t* inputs);

/** Inputs of a ragged prefill call (SPEC section 2). Row r sees keys [row_start[r], row_end[r]).
 *  q and k must be 16-byte aligned, the other arrays 4-byte aligned.
 *  Memory: every pointer is in the memory of the context's backend, as for dsa_paged_inputs_t. */
typedef struct dsa_ragged_inputs {
    size_t struct_size;          /**< sizeof(dsa_ragged_inputs_t), set by the initialiser */
    int32_t num_rows;            /**< S: query rows */
    int64_t num_keys;            /**< N: keys of the whole batch */
    const void* q;               /**< [S, H, D] fp8 e4m3, contiguous */
    const void* k;               /**< [N, D] fp8 e4m3, contiguous */
    const float* k_scale;        /**< [N] fp32 */
    const float* weights;        /**< [S, H] fp32, contiguous */
    const int32_t* row_start;    /**< [S], 0 <= row_start[r] <= row_end[r] <= N */
    const int32_t* row_end;      /**< [S] */
} dsa_ragged_inputs_t;

#define DSA_RAGGED_INPUTS_INIT { sizeof(dsa_ragged_inputs_t), 0, 0, NULL, NULL, NULL, NULL, NULL, NULL }

/** Fills *inputs with zeros and the struct size. inputs must not be NULL. */
DSA_API void dsa_ragged_inputs_init(dsa_ragged_inputs_t* inputs);

/** Outputs of a top-k call, [rows, k] each, row-major, contiguous, 4-byte aligned; same memory rules as
 *  the inputs; they must not overlap any input or each other. Rows with n < k visible positions hold their
 *  n results first, then -1 (and -inf in scores). Without DSA_TOPK_SORTED a row's results come in
 *  ascending position order (the same on every backend). A returned score of -0 reads back as +0 and
 *  every NaN score as the one quiet NaN (both rank as SPEC section 1 says: -0 == +0, NaN lowest).
 *  Asking for scores (or DSA_TOPK_SORTED) costs more than the scores' writes: on sm_90 a row that sees at
 *  most k positions is written without scoring it when neither is asked for. */
typedef struct dsa_topk_outputs {
    size_t struct_size;   /**< sizeof(dsa_topk_outputs_t), set by the initialiser */
    int32_t* indices;     /**< [rows, k] int32, required */
    float* scores;        /**< [rows, k] fp32 score of each returned index, optional (NULL = not written) */
    /* since 0.2 */
    int32_t memory_device; /**< dsa_topk only: where indices and scores are, DSA_MEMORY_HOST (the
                                initialiser's value) or a device id of the context in this process.
                                The engine-path calls ignore it (their outputs are in the backend's memory). */
} dsa_topk_outputs_t;

#define DSA_TOPK_OUTPUTS_INIT { sizeof(dsa_topk_outputs_t), NULL, NULL, DSA_MEMORY_HOST }

/** Fills *outputs with NULLs, DSA_MEMORY_HOST and the struct size. outputs must not be NULL. */
DSA_API void dsa_topk_outputs_init(dsa_topk_outputs_t* outputs);

/* ---------------------------------------------------------------------------------------------------- */
/* Engine path: caller memory, caller stream, caller workspace                                           */

/** Bytes of workspace dsa_topk_paged needs for these params and input sizes (only batch_size, max_pages
 *  and num_pages of inputs are read; its pointers may be NULL). 0 on the CPU backend. */
DSA_API dsa_status_t dsa_topk_paged_workspace_size(dsa_context_t context, const dsa_topk_params_t* params,
                                                   const dsa_paged_inputs_t* inputs, size_t* out_bytes);

/** Paged decode top-k (SPEC section 1) on the caller's memory.
 *  CPU backend: synchronous; stream must be NULL; workspace may be NULL.
 *  GPU backend: runs on the context's first device, asynchronously on `stream` (a cudaStream_t; NULL is
 *  the legacy default stream); workspace is device memory of at least the queried size, owned by the
 *  caller and not used by anything else until the work completes. No allocation and no host
 *  synchronisation: the call may be captured in a CUDA graph. Bad block-table entries and seq_lens are
 *  found on the device and reported by dsa_context_synchronize (those rows get padding only). A NaN
 *  weight is rejected on the CPU backend (host-visible data); on a GPU it is not inspected, and the NaN
 *  scores it produces rank lowest as SPEC section 1 says.
 *  All host-visible checks (SPEC section 4) happen before any work; a rejected call writes nothing. */
DSA_API dsa_status_t dsa_topk_paged(dsa_context_t context, const dsa_topk_params_t* params,
                                    const dsa_paged_inputs_t* inputs, const dsa_topk_outputs_t* outputs,
                                    void* workspace, size_t workspace_bytes, void* stream);

/** Bytes of workspace dsa_topk_ragged needs (only num_rows and num_keys of inputs are read). On a GPU it
 *  does not grow with num_rows x num_keys; on sm_90, DSA_TOPK_SORTED adds num_rows x topk x 4 bytes (the
 *  scores the ranking reads), reserved whether or not the call's outputs take scores. */
DSA_API dsa_status_t dsa_topk_ragged_workspace_size(dsa_context_t context, const dsa_topk_params_t* params,
                                                    const dsa_ragged_inputs_t* inputs, size_t* out_bytes);

/** Ragged prefill top-k (SPEC section 2) on the caller's memory; memory, stream and workspace rules as
 *  for dsa_topk_paged. params->page_size and params->next_n are ignored. */
DSA_API dsa_status_t dsa_topk_ragged(dsa_context_t context, const dsa_topk_params_t* params,
                                     const dsa_ragged_inputs_t* inputs, const dsa_topk_outputs_t* outputs,
                                     void* workspace, size_t workspace_bytes, void* stream);

/* ---------------------------------------------------------------------------------------------------- */
/* Owned-cache path: the library holds the K cache                                                       */

/** dsa_cache_config_t.mode: every GPU of the context holds every page; dsa_topk splits the rows over the
 *  GPUs by cost (visible tokens). For batches of many rows. */
#define DSA_CACHE_REPLICATED 0
/** dsa_cache_config_t.mode: physical page p lives only on GPU rank p % G (G GPUs in the context, over all
 *  its processes), so the cache may be G times larger than one GPU's memory; every GPU scores every row
 *  over its own pages, and the candidates are merged into the global top-k. For few, long sequences.
 *  Engines that hand out physical pages in order spread each sequence over all GPUs. */
#define DSA_CACHE_SHARDED 1

/** Owned-cache configuration. Initialise with dsa_cache_config_init() (or DSA_CACHE_CONFIG_INIT). */
typedef struct dsa_cache_config {
    size_t struct_size;   /**< sizeof(dsa_cache_config_t), set by the initialiser */
    int64_t num_pages;    /**< physical pages, >= 1 */
    int32_t page_size;    /**< P: 32 or 64 */
    int32_t head_dim;     /**< D: 128 */
    /* since 0.2 */
    int32_t mode;         /**< DSA_CACHE_REPLICATED (the initialiser's value) or DSA_CACHE_SHARDED; both give
                               bit-identical results, and the CPU backend treats both as one whole cache */
} dsa_cache_config_t;

#define DSA_CACHE_CONFIG_INIT { sizeof(dsa_cache_config_t), 0, 64, 128, DSA_CACHE_REPLICATED }

/** Fills *config with defaults (0 pages, P 64, D 128, replicated). config must not be NULL. */
DSA_API void dsa_cache_config_init(dsa_cache_config_t* config);

/** Creates a cache of config->num_pages pages on the context's backend, every key zero and every scale
 *  zero until written. The caller destroys it with dsa_cache_destroy before destroying the context. */
DSA_API dsa_status_t dsa_cache_create(dsa_context_t context, const dsa_cache_config_t* config,
                                      dsa_cache_t* out_cache);

/** Destroys a cache. NULL is a no-op returning DSA_STATUS_SUCCESS. */
DSA_API dsa_status_t dsa_cache_destroy(dsa_cache_t cache);

/** Writes n tokens: token i goes to slot slots[i] (= physical page * P + offset in page) with key
 *  keys[i * D .. i * D + D) (fp8 e4m3) and scale scales[i]. All of slots, keys and scales live in the
 *  memory named by memory_device (DSA_MEMORY_HOST, or a device id of the context). Every slot is checked
 *  before anything is written: a slot outside [0, num_pages * P) fails the whole call with
 *  DSA_STATUS_INVALID_ARGUMENT and the cache is unchanged. A slot repeated in one call takes its last
 *  occurrence. Synchronous: the data may be reused when the call returns. The tokens are staged once and
 *  fanned out to every replica (or sent to the GPU owning each page) with one NCCL group call; only the
 *  written slots move. In a context spanning processes, every rank passes the same slots and n, and the
 *  keys and scales of rank 0 are the ones written. */
DSA_API dsa_status_t dsa_cache_write(dsa_cache_t cache, const int64_t* slots, const void* keys,
                                     const float* scales, int64_t n, int32_t memory_device);

/** Reads n tokens back (the inverse of dsa_cache_write, same rules; keys_out [n, D], scales_out [n]). */
DSA_API dsa_status_t dsa_cache_read(dsa_cache_t cache, const int64_t* slots, void* keys_out,
                                    float* scales_out, int64_t n, int32_t memory_device);

/** Paged decode top-k over an owned cache. inputs are host memory; outputs are where
 *  outputs->memory_device says (host, or a GPU of the context in this process); inputs->k_cache must be
 *  NULL and inputs->num_pages / page_stride_bytes 0 (the cache supplies them); params->page_size and
 *  head_dim must match the cache. Synchronous: results are in outputs when it returns. With several GPUs
 *  the work is split as the cache's mode says, and the result is bit-identical to one GPU's. In a context
 *  spanning processes every rank receives the whole result. */
DSA_API dsa_status_t dsa_topk(dsa_context_t context, dsa_cache_t cache, const dsa_topk_params_t* params,
                              const dsa_paged_inputs_t* inputs, const dsa_topk_outputs_t* outputs);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DSA_INDEXER_H */
