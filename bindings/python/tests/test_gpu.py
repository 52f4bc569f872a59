"""The GPU backend through PyTorch (and CuPy when installed) CUDA tensors, compared with the CPU context.
Skipped without PyTorch, without a CUDA GPU, or with a library built without CUDA."""

import numpy as np
import pytest

import dsa_indexer as dsa
from dsa_indexer.fp8 import float32_to_e4m3
from paged_case import check_case, empty_case, spec6_case

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


def integer_case(seq_lens, next_n=1, heads=64, page_size=64, seed=0):
    """Small integer keys, queries and weights with scale 1: exact scores, so every backend must return
    the same indices (ties by position) and the same scores."""
    rng = np.random.default_rng(seed)
    case = empty_case(seq_lens, heads=heads, page_size=page_size, next_n=next_n, rng=rng)
    case.q[...] = float32_to_e4m3(rng.integers(-2, 3, case.q.shape))
    case.weights[...] = rng.integers(-2, 3, case.weights.shape)
    case.page_keys()[...] = float32_to_e4m3(rng.integers(-3, 4, case.page_keys().shape))
    case.page_scales()[...] = 1.0
    return case


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
