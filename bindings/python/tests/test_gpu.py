"""The GPU backend through PyTorch (and CuPy when installed) CUDA tensors, compared with the CPU context.
Skipped without PyTorch, without a CUDA GPU, or with a library built without CUDA."""

import numpy as np
import pytest

import dsa_indexer as dsa
from dsa_indexer.fp8 import float32_to_e4m3
from fakes import FakeCudaArray
from paged_case import check_case, integer_case, spec6_case

try:
    import torch
except ImportError:
    torch = None

pytestmark = pytest.mark.skipif(torch is None or not torch.cuda.is_available(),
                                reason="needs PyTorch with a CUDA GPU")


@pytest.fixture(scope="module")
def gpu():
    try:
        context = dsa.Context([0])
    except dsa.NoDeviceError as e:
        pytest.skip(f"the library has no usable GPU backend: {e.message}")
    yield context
    context.close()


@pytest.fixture(scope="module")
def cpu():
    with dsa.Context() as context:
        yield context


def cuda(array):
    return torch.from_numpy(np.ascontiguousarray(array)).cuda()


def cuda_args(case):
    return [cuda(a) for a in case.args()]


@pytest.mark.parametrize("logical", [False, True])
@pytest.mark.parametrize("next_n", [1, 2])
def test_gpu_equals_cpu_on_exact_inputs(gpu, cpu, next_n, logical):
    case = integer_case([0, 1, 63, 64, 65, 300, 3000], next_n=next_n, seed=next_n)
    options = dict(page_size=64, topk=256, sorted=True, logical_indices=logical, return_scores=True)
    expected, expected_scores = cpu.topk_paged(*case.args(), **options)
    indices, scores = gpu.topk_paged(*cuda_args(case), **options)
    torch.cuda.synchronize()
    gpu.synchronize()
    assert indices.is_cuda and indices.dtype == torch.int32
    assert np.array_equal(indices.cpu().numpy(), expected)
    assert np.array_equal(scores.cpu().numpy(), expected_scores)


def test_gpu_meets_the_spec_on_random_inputs(gpu):
    case = spec6_case([0, 1, 100, 2048, 2049, 5000], seed=3)
    indices = gpu.topk_paged(*cuda_args(case), page_size=64, topk=2048)
    gpu.synchronize()
    check_case(case, indices.cpu().numpy(), 2048, False)


@pytest.mark.skipif(torch is None or not hasattr(torch, "float8_e4m3fn"), reason="no torch.float8_e4m3fn")
def test_float8_tensors(gpu):
    case = integer_case([500, 70], seed=4)
    q, k_cache, weights, seq_lens, table = cuda_args(case)
    plain = gpu.topk_paged(q, k_cache, weights, seq_lens, table, topk=64, sorted=True)
    fp8 = gpu.topk_paged(q.view(torch.float8_e4m3fn), k_cache, weights, seq_lens, table, topk=64, sorted=True)
    assert torch.equal(plain, fp8)


def test_streams_current_and_explicit(gpu, cpu):
    case = integer_case([1000, 10, 300], seed=5)
    expected = cpu.topk_paged(*case.args(), topk=128, sorted=True)
    args = cuda_args(case)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # the tensors' current stream is the default
        indices = gpu.topk_paged(*args, topk=128, sorted=True)
    side.synchronize()
    assert np.array_equal(indices.cpu().numpy(), expected)
    other = torch.cuda.Stream()
    out = torch.empty_like(indices)
    gpu.topk_paged(*args, topk=128, sorted=True, indices=out, stream=other)
    other.synchronize()
    assert np.array_equal(out.cpu().numpy(), expected)


def test_cuda_graph_capture_and_replay(gpu, cpu):
    first, second = integer_case([700, 64, 1], seed=6), integer_case([700, 64, 1], seed=7)
    second.block_table[...] = first.block_table
    second.seq_lens[...] = first.seq_lens
    q, k_cache, weights, seq_lens, table = cuda_args(first)
    batch, max_pages = table.shape
    workspace = torch.empty(gpu.topk_paged_workspace_size(batch, max_pages, k_cache.shape[0], topk=64),
                            dtype=torch.uint8, device="cuda")
    indices = torch.empty((batch, 64), dtype=torch.int32, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gpu.topk_paged(q, k_cache, weights, seq_lens, table, topk=64, sorted=True, indices=indices,
                       workspace=workspace)
    for case in (first, second, first):
        q.copy_(torch.from_numpy(case.q))
        k_cache.copy_(torch.from_numpy(case.k_cache))
        weights.copy_(torch.from_numpy(case.weights))
        graph.replay()
        torch.cuda.synchronize()
        assert np.array_equal(indices.cpu().numpy(), cpu.topk_paged(*case.args(), topk=64, sorted=True))


def test_bad_block_table_entry_is_reported_by_synchronize(gpu):
    case = integer_case([200, 100], seed=8)
    case.block_table[1, 1] = case.k_cache.shape[0] + 5  # visible: sequence 1 has two pages
    indices = gpu.topk_paged(*cuda_args(case), topk=16)
    with pytest.raises(dsa.DeviceInputError) as info:
        gpu.synchronize()
    assert info.value.status == dsa.Status.DEVICE_INPUT_ERROR
    assert torch.all(indices[1] == -1)
    gpu.synchronize()  # reading the flag cleared it


def test_too_small_workspace(gpu):
    case = integer_case([3000], seed=9)
    args = cuda_args(case)
    required = gpu.topk_paged_workspace_size(1, case.block_table.shape[1], case.k_cache.shape[0], topk=16)
    if required == 0:
        pytest.skip("this call needs no workspace")
    with pytest.raises(dsa.InsufficientWorkspaceError):
        gpu.topk_paged(*args, topk=16, workspace=torch.empty(required - 1, dtype=torch.uint8, device="cuda"))


def test_host_arrays_are_refused_by_a_gpu_context(gpu):
    case = integer_case([10])
    with pytest.raises(ValueError, match="must be in CUDA device 0"):
        gpu.topk_paged(*case.args(), topk=4)
    q, k_cache, weights, seq_lens, table = cuda_args(case)
    with pytest.raises(ValueError, match="weights: is in host memory"):
        gpu.topk_paged(q, k_cache, case.weights, seq_lens, table, topk=4)


def test_ragged_gpu_equals_cpu(gpu, cpu):
    rng = np.random.default_rng(10)
    rows, keys = 300, 1200
    q = float32_to_e4m3(rng.integers(-2, 3, (rows, 64, 128)))
    k = float32_to_e4m3(rng.integers(-3, 4, (keys, 128)))
    k_scale = np.ones(keys, np.float32)
    weights = rng.integers(-2, 3, (rows, 64)).astype(np.float32)
    row_start = rng.integers(0, 600, rows).astype(np.int32)
    row_end = (row_start + rng.integers(0, 600, rows)).astype(np.int32)
    args = (q, k, k_scale, weights, row_start, row_end)
    expected = cpu.topk_ragged(*args, topk=100, sorted=True)
    got = gpu.topk_ragged(*[cuda(a) for a in args], topk=100, sorted=True)
    gpu.synchronize()
    assert np.array_equal(got.cpu().numpy(), expected)


def test_owned_cache_on_the_gpu(gpu, cpu):
    case = integer_case([500, 3], seed=11)
    expected = cpu.topk_paged(*case.args(), topk=32, sorted=True)
    slots = np.concatenate([case.slots(b) for b in range(2)])
    P = case.page_size
    with gpu.create_cache(case.k_cache.shape[0]) as cache:
        cache.write(cuda(slots), cuda(case.page_keys()[slots // P, slots % P]),
                    cuda(case.page_scales()[slots // P, slots % P]))
        got = cache.topk(case.q, case.weights, case.seq_lens, case.block_table, topk=32, sorted=True)
        keys, scales = cache.read(cuda(slots[:5]))
        assert keys.is_cuda and np.array_equal(keys.cpu().numpy(), case.page_keys()[slots[:5] // P, slots[:5] % P])
    assert np.array_equal(got, expected)


def test_cupy_arrays(gpu, cpu):
    cupy = pytest.importorskip("cupy")
    case = integer_case([800, 20], seed=12)
    expected = cpu.topk_paged(*case.args(), topk=64, sorted=True)
    got = gpu.topk_paged(*[cupy.asarray(a) for a in case.args()], topk=64, sorted=True)
    cupy.cuda.get_current_stream().synchronize()
    assert np.array_equal(cupy.asnumpy(got), expected)


# ---- 0.2: owned-cache outputs on the GPU (memory_device), cache modes, a one-rank context from an NCCL id ----

def written_cache(context, case, **options):
    cache = context.create_cache(case.k_cache.shape[0], page_size=case.page_size, **options)
    slots = np.concatenate([case.slots(b) for b in range(len(case.seq_lens))])
    P = case.page_size
    cache.write(slots, case.page_keys()[slots // P, slots % P], case.page_scales()[slots // P, slots % P])
    return cache


def cache_args(case):
    return case.q, case.weights, case.seq_lens, case.block_table


class DlpackOnly:
    """A CUDA tensor seen through DLPack alone (no __cuda_array_interface__)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, stream=None):
        return self.tensor.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.tensor.__dlpack_device__()


@pytest.mark.parametrize("mode", ["replicated", "sharded"])
def test_owned_cache_topk_into_device_outputs(gpu, cpu, mode):
    case = integer_case([500, 3, 64, 0], seed=13)
    options = dict(topk=32, sorted=True)
    expected, expected_scores = cpu.topk_paged(*case.args(), **options, return_scores=True)
    with written_cache(gpu, case, mode=mode) as cache:
        assert cache.mode == mode
        # Outputs given on the GPU: written there, synchronously (no synchronize before reading them).
        indices = torch.full((4, 32), -7, dtype=torch.int32, device="cuda:0")
        scores = torch.full((4, 32), 5.0, dtype=torch.float32, device="cuda:0")
        got = cache.topk(*cache_args(case), **options, indices=indices, scores=scores)
        assert got[0] is indices and got[1] is scores
        assert np.array_equal(indices.cpu().numpy(), expected) and np.array_equal(scores.cpu().numpy(), expected_scores)
        # Only indices given: scores are made like it (torch, same device).
        got_indices, got_scores = cache.topk(*cache_args(case), **options, return_scores=True,
                                             indices=torch.empty((4, 32), dtype=torch.int32, device="cuda:0"))
        assert got_scores.is_cuda and got_scores.dtype == torch.float32 and got_scores.device == got_indices.device
        assert np.array_equal(got_scores.cpu().numpy(), expected_scores)
        # Only scores given on the GPU: indices follow it there.
        got_indices, _ = cache.topk(*cache_args(case), **options,
                                    scores=torch.empty((4, 32), dtype=torch.float32, device="cuda:0"))
        assert got_indices.is_cuda and np.array_equal(got_indices.cpu().numpy(), expected)
        # A DLPack-only output.
        target = torch.zeros((4, 32), dtype=torch.int32, device="cuda:0")
        cache.topk(*cache_args(case), **options, indices=DlpackOnly(target))
        assert np.array_equal(target.cpu().numpy(), expected)
        # No outputs given: host numpy, as before.
        host = cache.topk(*cache_args(case), **options)
        assert isinstance(host, np.ndarray) and np.array_equal(host, expected)


def test_device_outputs_follow_work_queued_on_the_current_stream(gpu, cpu):
    """The output's last writer is a kernel still queued on a side stream the caller made current: the
    binding waits for it, so the library's results are what remains."""
    case = integer_case([3000, 700], seed=14)
    expected = cpu.topk_paged(*case.args(), topk=64, sorted=True)
    with written_cache(gpu, case) as cache:
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            indices = torch.empty((2, 64), dtype=torch.int32, device="cuda:0")
            big = torch.ones((4096, 4096), device="cuda:0")
            for _ in range(4):
                big = big @ big / 4096  # keep the stream busy
            indices.fill_(-5)
            cache.topk(*cache_args(case), topk=64, sorted=True, indices=indices)
            result = indices.cpu().numpy()
        assert np.array_equal(result, expected)


def test_device_outputs_must_be_on_a_device_of_the_context(gpu):
    case = integer_case([100], seed=15)
    with written_cache(gpu, case) as cache:
        with pytest.raises(ValueError, match=r"indices: is in CUDA device 5, which is not a device of the context "
                                             r"in this process \[0\]"):
            cache.topk(*cache_args(case), topk=8, indices=FakeCudaArray((1, 8), "<i4", device=5))
        if torch.cuda.device_count() > 1:
            with pytest.raises(ValueError, match="CUDA device 1, which is not a device of the context"):
                cache.topk(*cache_args(case), topk=8, indices=torch.empty((1, 8), dtype=torch.int32, device="cuda:1"))
        with pytest.raises(ValueError, match="scores: is in host memory, but indices is in CUDA device 0"):
            cache.topk(*cache_args(case), topk=8, indices=torch.empty((1, 8), dtype=torch.int32, device="cuda:0"),
                       scores=np.empty((1, 8), np.float32))
        with pytest.raises(TypeError, match="indices: dtype must be int32"):
            cache.topk(*cache_args(case), topk=8, indices=torch.empty((1, 8), dtype=torch.int64, device="cuda:0"))
        with pytest.raises(ValueError, match=r"indices: shape must be \(rows, topk\)"):
            cache.topk(*cache_args(case), topk=8, indices=torch.empty((1, 9), dtype=torch.int32, device="cuda:0"))


def test_owned_cache_device_outputs_with_cupy(gpu, cpu):
    cupy = pytest.importorskip("cupy")
    case = integer_case([800, 20], seed=16)
    expected = cpu.topk_paged(*case.args(), topk=64, sorted=True)
    with written_cache(gpu, case, mode="sharded") as cache:
        indices = cupy.empty((2, 64), dtype=cupy.int32)
        got, scores = cache.topk(*cache_args(case), topk=64, sorted=True, indices=indices, return_scores=True)
        assert got is indices and isinstance(scores, cupy.ndarray)
        assert np.array_equal(cupy.asnumpy(indices), expected)


def test_one_rank_context_from_an_nccl_unique_id(cpu):
    try:
        unique_id = dsa.nccl_unique_id()
    except dsa.NotImplementedByLibraryError as e:
        pytest.skip(f"the library has no NCCL: {e.message}")
    case = integer_case([900, 5], seed=17)
    expected = cpu.topk_paged(*case.args(), topk=48, sorted=True)
    with dsa.Context.from_nccl_unique_id(unique_id, 0, 1, 0) as context:
        assert context.devices == (0,) and context.num_devices == 1
        assert (context.nccl_rank, context.nccl_world_size) == (0, 1) and "rank=0/1" in repr(context)
        with pytest.raises(dsa.UnsupportedError):
            context.set_devices([0])  # a rank is bound to its GPU
        for mode in ("replicated", "sharded"):
            with written_cache(context, case, mode=mode) as cache:
                indices = torch.empty((2, 48), dtype=torch.int32, device="cuda:0")
                cache.topk(*cache_args(case), topk=48, sorted=True, indices=indices)
                assert np.array_equal(indices.cpu().numpy(), expected)
