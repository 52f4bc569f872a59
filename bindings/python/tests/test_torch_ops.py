"""dsa_indexer.torch: the torch.library ops (issue 14). Skipped, saying so, without PyTorch (>= 2.4).

On the CPU (any machine with PyTorch): registration, the fake implementation's shapes and dtypes, the CPU
implementation against Context.topk_paged / topk_ragged, the out variants, torch.library.opcheck and
torch.compile(fullgraph=True). On a CUDA GPU with a library built with CUDA: the same against the GPU
context, the op inside torch.compile(fullgraph=True) and inside a captured CUDA graph equal to the direct
call, opcheck on CUDA tensors, and the cached workspace.

Exact equality with the CPU backend is asserted only on inputs without near-ties (integer_case, ramp_case,
the integer ragged arrays): the GPU sums in another fp32 order (SPEC section 5). On random inputs (SPEC
section 6) the op must equal the direct Context call on the same device bit for bit, and meet the SPEC
section 5 rule."""

import numpy as np
import pytest

import dsa_indexer as dsa
from paged_case import check_case, integer_case, ramp_case, spec6_case

torch = pytest.importorskip("torch", reason="needs PyTorch (pip install torch) for dsa_indexer.torch")
try:
    import dsa_indexer.torch as dsa_torch
except ImportError as e:  # PyTorch older than 2.4
    pytest.skip(f"dsa_indexer.torch cannot be imported: {e}", allow_module_level=True)

ops = torch.ops.dsa_indexer


def gpu_available():
    if not torch.cuda.is_available():
        return False
    try:
        dsa_torch.context(0)
    except dsa.NoDeviceError:
        return False
    return True


needs_gpu = pytest.mark.skipif(not gpu_available(),
                               reason="needs a CUDA GPU visible to PyTorch and a library built with CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_gpu)]


def paged_tensors(case, device):
    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in case.args()]


def ragged_arrays(seed=0, rows=40, keys=300, heads=64):
    rng = np.random.default_rng(seed)
    from dsa_indexer.fp8 import float32_to_e4m3
    q = float32_to_e4m3(rng.integers(-2, 3, (rows, heads, 128)))
    k = float32_to_e4m3(rng.integers(-3, 4, (keys, 128)))
    k_scale = np.ones(keys, np.float32)
    weights = rng.integers(-2, 3, (rows, heads)).astype(np.float32)
    row_start = rng.integers(0, keys // 2, rows).astype(np.int32)
    row_end = (row_start + rng.integers(0, keys // 2, rows)).astype(np.int32)
    return q, k, k_scale, weights, row_start, row_end


def expected_paged(case, **options):
    """The CPU backend's answer (numpy)."""
    with dsa.Context() as cpu:
        return cpu.topk_paged(*case.args(), **options)


def same_device_call(case, device, **options):
    """The direct Context call (no torch op) on the op's own device, as numpy; scores too with
    return_scores=True."""
    result = dsa_torch.context(device).topk_paged(*paged_tensors(case, device), **options)
    if device == "cuda":
        torch.cuda.synchronize()
        dsa_torch.context(device).synchronize()
    if isinstance(result, tuple):
        return tuple(r.cpu().numpy() if isinstance(r, torch.Tensor) else r for r in result)
    return result.cpu().numpy() if isinstance(result, torch.Tensor) else result


def options_out(options):
    """The functional op's options less topk (the _out ops take k from indices)."""
    return {key: value for key, value in options.items() if key != "topk"}


# ---- registration and the fake implementation ----------------------------------------------------------

def test_ops_are_registered_with_their_schemas():
    for name in ("topk_paged", "topk_paged_out", "topk_ragged", "topk_ragged_out"):
        assert hasattr(ops, name), name
    schema = str(ops.topk_paged.default._schema)
    assert "int page_size=64, int topk=2048, int? next_n=None, bool sorted=False, bool logical_indices=False" in schema
    assert "Tensor(a!) indices, Tensor(b!)? scores, *, int page_size=64" in str(ops.topk_paged_out.default._schema)
    assert "Tensor(a!) indices, Tensor(b!)? scores, *, bool sorted=False" in str(ops.topk_ragged_out.default._schema)


def test_mutated_arguments_are_positional_without_defaults():
    """A mutated argument with a default is dropped by the dispatcher when the call leaves it at the
    default, and torch.library.custom_op's ADInplaceOrView kernel then indexes past the arguments on
    PyTorch 2.11 (IndexError): every mutated argument must be positional and required."""
    for name in ("topk_paged", "topk_paged_out", "topk_ragged", "topk_ragged_out"):
        for argument in getattr(ops, name).default._schema.arguments:
            if argument.alias_info is not None and argument.alias_info.is_write:
                assert not argument.kwarg_only, f"{name}: {argument.name} is keyword-only"
                assert not argument.has_default_value(), f"{name}: {argument.name} has a default"


def test_fake_implementation_gives_shapes_and_dtypes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty((3, 2, 64, 128), dtype=torch.uint8, device="meta")
        k_cache = torch.empty((10, 64 * 132), dtype=torch.uint8, device="meta")
        weights = torch.empty((6, 64), dtype=torch.float32, device="meta")
        seq_lens = torch.empty(3, dtype=torch.int32, device="meta")
        table = torch.empty((3, 4), dtype=torch.int32, device="meta")
        out = ops.topk_paged(q, k_cache, weights, seq_lens, table, topk=512)
        assert out.shape == (6, 512) and out.dtype == torch.int32 and out.device.type == "meta"
        out = ops.topk_paged(q.view(6, 64, 128), k_cache, weights, seq_lens, table, topk=7, next_n=2)
        assert out.shape == (6, 7)
        ragged = ops.topk_ragged(q.view(6, 64, 128), k_cache.view(-1, 128)[:50], torch.empty(50, device="meta"),
                                 weights, seq_lens.new_empty(6), seq_lens.new_empty(6), topk=100)
        assert ragged.shape == (6, 100) and ragged.dtype == torch.int32
        with pytest.raises(ValueError, match=r"topk: supported range is \[1, 2048\]"):
            ops.topk_paged(q, k_cache, weights, seq_lens, table, topk=10 ** 12)


# ---- the real implementations, against the Context calls -------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("logical", [False, True])
@pytest.mark.parametrize("next_n", [1, 2])
def test_topk_paged_equals_the_cpu_backend_on_exact_inputs(device, logical, next_n):
    case = integer_case([0, 1, 100, 700, 2500], next_n=next_n, seed=1 + next_n)
    rows = 5 * next_n
    options = dict(page_size=64, topk=256, sorted=True, logical_indices=logical)
    got = ops.topk_paged(*paged_tensors(case, device), **options)
    assert got.device.type == device and got.dtype == torch.int32 and got.shape == (rows, 256)
    expected, expected_scores = expected_paged(case, return_scores=True, **options)
    assert np.array_equal(got.cpu().numpy(), expected)
    indices = torch.full((rows, 256), -7, dtype=torch.int32, device=device)
    scores = torch.full((rows, 256), 5.0, dtype=torch.float32, device=device)
    ops.topk_paged_out(*paged_tensors(case, device), indices, scores, **options_out(options))
    assert np.array_equal(indices.cpu().numpy(), expected) and np.array_equal(scores.cpu().numpy(), expected_scores)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("logical", [False, True])
def test_topk_paged_on_random_inputs_equals_the_same_devices_context_call(device, logical):
    """SPEC section 6 inputs have near-ties: the op must match the Context call on its own device bit for
    bit (GPU op vs GPU call, CPU op vs CPU call) and meet SPEC section 5, not equal the CPU backend."""
    case = spec6_case([0, 1, 100, 700, 2500], seed=1)
    options = dict(page_size=64, topk=256, sorted=True, logical_indices=logical)
    got = ops.topk_paged(*paged_tensors(case, device), **options)
    assert got.device.type == device and got.dtype == torch.int32 and got.shape == (5, 256)
    got = got.cpu().numpy()
    check_case(case, got, 256, logical)  # distinct, visible, min(k, n) of them, -1 padding, SPEC-5 scores
    expected, expected_scores = same_device_call(case, device, return_scores=True, **options)
    assert np.array_equal(got, expected)
    indices = torch.full((5, 256), -7, dtype=torch.int32, device=device)
    scores = torch.full((5, 256), 5.0, dtype=torch.float32, device=device)
    ops.topk_paged_out(*paged_tensors(case, device), indices, scores, **options_out(options))
    assert np.array_equal(indices.cpu().numpy(), expected)
    assert np.array_equal(scores.cpu().numpy(), expected_scores, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_topk_paged_out_writes_the_callers_tensors(device):
    case = ramp_case([40, 5], next_n=2)
    expected, expected_scores = expected_paged(case, page_size=32, topk=8, sorted=True, return_scores=True)
    indices = torch.full((4, 8), -7, dtype=torch.int32, device=device)
    scores = torch.zeros((4, 8), dtype=torch.float32, device=device)
    assert ops.topk_paged_out(*paged_tensors(case, device), indices, scores, page_size=32, sorted=True) is None
    assert np.array_equal(indices.cpu().numpy(), expected)
    assert np.array_equal(scores.cpu().numpy(), expected_scores)
    # Every way of calling it: scores None positionally or by keyword, the tensors by keyword, and the
    # Python function with scores left out (while scores had a default, PyTorch 2.11 failed every call
    # that left it None with an IndexError).
    args = paged_tensors(case, device)
    calls = [  # (call, whether it passes scores)
        (lambda: ops.topk_paged_out(*args, indices, None, page_size=32, sorted=True), False),
        (lambda: ops.topk_paged_out(*args, indices, scores=None, page_size=32, sorted=True), False),
        (lambda: ops.topk_paged_out(*args, indices=indices, scores=scores, page_size=32, sorted=True), True),
        (lambda: ops.topk_paged_out.default(*args, indices, None, page_size=32, sorted=True), False),
        (lambda: dsa_torch.topk_paged_out(*args, indices, page_size=32, sorted=True), False),
        (lambda: dsa_torch.topk_paged_out(*args, indices, scores=scores, page_size=32, sorted=True), True),
        (lambda: dsa_torch.topk_paged_out(*args, indices, scores, page_size=32, sorted=True), True),
    ]
    for number, (call, with_scores) in enumerate(calls):
        indices.fill_(-7)
        scores.fill_(5.0)
        versions = indices._version, scores._version
        assert call() is None
        assert indices._version > versions[0], number  # the mutation is recorded (ADInplaceOrView)
        assert np.array_equal(indices.cpu().numpy(), expected), number
        if with_scores:
            assert scores._version > versions[1], number
            assert np.array_equal(scores.cpu().numpy(), expected_scores), number
        else:
            assert (scores == 5.0).all(), number
    with pytest.raises(RuntimeError, match="scores"):
        ops.topk_paged_out(*args, indices, page_size=32, sorted=True)  # the op itself requires scores


@pytest.mark.parametrize("device", DEVICES)
def test_topk_ragged_and_out_variant(device):
    arrays = ragged_arrays()
    with dsa.Context() as cpu:
        expected, expected_scores = cpu.topk_ragged(*arrays, topk=64, sorted=True, return_scores=True)
    tensors = [torch.from_numpy(a).to(device) for a in arrays]
    assert np.array_equal(ops.topk_ragged(*tensors, topk=64, sorted=True).cpu().numpy(), expected)
    indices = torch.empty((40, 64), dtype=torch.int32, device=device)
    scores = torch.empty((40, 64), dtype=torch.float32, device=device)
    ops.topk_ragged_out(*tensors, indices, scores, sorted=True)
    assert np.array_equal(indices.cpu().numpy(), expected) and np.array_equal(scores.cpu().numpy(), expected_scores)
    for call in (lambda: ops.topk_ragged_out(*tensors, indices, None, sorted=True),
                 lambda: ops.topk_ragged_out(*tensors, indices, scores=None, sorted=True),
                 lambda: dsa_torch.topk_ragged_out(*tensors, indices, sorted=True),
                 lambda: dsa_torch.topk_ragged_out(*tensors, indices, scores=scores, sorted=True)):
        indices.fill_(-7)
        call()
        assert np.array_equal(indices.cpu().numpy(), expected)


def test_errors_surface_as_the_bindings_exceptions():
    case = ramp_case([40, 5])
    args = paged_tensors(case, "cpu")
    with pytest.raises(ValueError, match=r"topk: supported range is \[1, 2048\]"):
        ops.topk_paged(*args, page_size=32, topk=-1)
    with pytest.raises(dsa.UnsupportedError, match="params->page_size is 16"):
        ops.topk_paged(*args, page_size=16, topk=4)
    with pytest.raises(TypeError, match="weights: dtype must be float32, got float64"):
        ops.topk_paged(args[0], args[1], args[2].double(), args[3], args[4], page_size=32, topk=4)


# ---- opcheck and torch.compile -------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    case = spec6_case([300, 64, 1], seed=2)
    args = paged_tensors(case, device)
    torch.library.opcheck(ops.topk_paged, tuple(args), dict(page_size=64, topk=32, sorted=True))
    indices = torch.empty((3, 32), dtype=torch.int32, device=device)
    scores = torch.empty((3, 32), dtype=torch.float32, device=device)
    torch.library.opcheck(ops.topk_paged_out, (*args, indices, scores), dict(page_size=64, sorted=True))
    torch.library.opcheck(ops.topk_paged_out, (*args, indices, None), dict(page_size=64, sorted=True))
    ragged = [torch.from_numpy(a).to(device) for a in ragged_arrays(seed=3)]
    torch.library.opcheck(ops.topk_ragged, tuple(ragged), dict(topk=16, sorted=True))
    indices = torch.empty((40, 16), dtype=torch.int32, device=device)
    torch.library.opcheck(ops.topk_ragged_out, (*ragged, indices, None), dict(sorted=True))
    torch.library.opcheck(ops.topk_ragged_out, (*ragged, indices, torch.empty((40, 16), device=device)),
                          dict(sorted=True))


def indexer_step(q, k_cache, weights, seq_lens, block_table, indices, scores):
    """What an engine's compiled decode step does around the op: scale the weights, run the top-k into
    persistent buffers, and turn them into something downstream uses."""
    weights = weights * 0.5
    dsa_torch.topk_paged_out(q, k_cache, weights, seq_lens, block_table, indices, page_size=64, sorted=True)
    ops.topk_paged_out(q, k_cache, weights, seq_lens, block_table, indices, scores, page_size=64, sorted=True)
    ops.topk_paged_out(q, k_cache, weights, seq_lens, block_table, indices, None, page_size=64, sorted=True)
    fresh = ops.topk_paged(q, k_cache, weights, seq_lens, block_table, page_size=64, topk=indices.shape[1],
                           sorted=True)
    return fresh, (indices >= 0).sum(dim=1), scores.amax(dim=1)


@pytest.mark.parametrize("device", DEVICES)
def test_inside_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    case = spec6_case([900, 3, 64, 0], seed=4)
    args = paged_tensors(case, device)
    direct_out = torch.empty((4, 128), dtype=torch.int32, device=device)
    direct_scores = torch.empty((4, 128), dtype=torch.float32, device=device)
    direct, direct_counts, direct_best = indexer_step(*args, direct_out, direct_scores)
    compiled_out = torch.full((4, 128), -5, dtype=torch.int32, device=device)
    compiled_scores = torch.full((4, 128), 5.0, dtype=torch.float32, device=device)
    # aot_eager on the CPU keeps the test free of a C++ compile; the GPU runs the default (inductor).
    backend = "inductor" if device == "cuda" else "aot_eager"
    step = torch.compile(indexer_step, fullgraph=True, backend=backend)
    compiled, counts, best = step(*args, compiled_out, compiled_scores)
    assert torch.equal(compiled.cpu(), direct.cpu()) and torch.equal(compiled_out.cpu(), direct_out.cpu())
    assert torch.equal(compiled_scores.cpu(), direct_scores.cpu())
    assert torch.equal(counts.cpu(), direct_counts.cpu()) and torch.equal(best.cpu(), direct_best.cpu())
    # Random inputs: the Context call on the same device, bit for bit, and SPEC section 5 (halving the
    # weights scales every score and magnitude alike).
    halved = spec6_case([900, 3, 64, 0], seed=4)
    halved.weights[...] *= 0.5
    assert np.array_equal(direct.cpu().numpy(), same_device_call(halved, device, page_size=64, topk=128, sorted=True))
    check_case(case, direct.cpu().numpy(), 128, False)
    # Another batch of the same shapes: the compiled graph is reused and still right.
    other = paged_tensors(spec6_case([900, 3, 64, 0], seed=5), device)
    again, _, _ = step(*other, compiled_out, compiled_scores)
    expected_again, _, _ = indexer_step(*other, torch.empty_like(compiled_out), torch.empty_like(compiled_scores))
    assert torch.equal(again.cpu(), expected_again.cpu())


# ---- CUDA graphs and the workspace cache ---------------------------------------------------------------

@needs_gpu
def test_inside_a_captured_cuda_graph():
    first, second = spec6_case([2000, 64, 1, 700], seed=6), spec6_case([2000, 64, 1, 700], seed=7)
    second.block_table[...] = first.block_table
    second.seq_lens[...] = first.seq_lens
    q, k_cache, weights, seq_lens, table = paged_tensors(first, "cuda")
    indices = torch.empty((4, 256), dtype=torch.int32, device="cuda")
    scores = torch.empty((4, 256), dtype=torch.float32, device="cuda")

    def step():
        ops.topk_paged_out(q, k_cache, weights, seq_lens, table, indices, scores, page_size=64, sorted=True)
        return ops.topk_paged(q, k_cache, weights, seq_lens, table, page_size=64, topk=256, sorted=True,
                              logical_indices=True)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside capture, as engines do
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logical = step()
    for case in (first, second, first):
        for tensor, array in ((q, case.q), (k_cache, case.k_cache), (weights, case.weights)):
            tensor.copy_(torch.from_numpy(array))
        graph.replay()
        torch.cuda.synchronize()
        direct_indices = torch.empty_like(indices)
        direct_scores = torch.empty_like(scores)
        ops.topk_paged_out(*paged_tensors(case, "cuda"), direct_indices, direct_scores, page_size=64, sorted=True)
        direct_logical = ops.topk_paged(*paged_tensors(case, "cuda"), page_size=64, topk=256, sorted=True,
                                        logical_indices=True)
        torch.cuda.synchronize()
        assert torch.equal(indices, direct_indices) and torch.equal(scores, direct_scores)
        assert torch.equal(logical, direct_logical)
    dsa_torch.context(0).synchronize()


@needs_gpu
def test_workspace_is_cached_per_device_and_stream():
    case = spec6_case([3000, 100], seed=9)
    args = paged_tensors(case, "cuda")
    required = dsa_torch.context(0).topk_paged_workspace_size(2, case.block_table.shape[1], case.k_cache.shape[0],
                                                              page_size=64, topk=64)
    ops.topk_paged(*args, page_size=64, topk=64)
    size = dsa_torch.workspace_bytes(0)
    assert size >= required  # earlier calls on this stream may have grown it beyond
    cached = dsa_torch._workspaces.get((0, int(torch.cuda.current_stream().cuda_stream)))
    ops.topk_paged(*args, page_size=64, topk=64)
    assert dsa_torch.workspace_bytes(0) == size
    assert dsa_torch._workspaces.get((0, int(torch.cuda.current_stream().cuda_stream))) is cached
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        ops.topk_paged(*args, page_size=64, topk=64)
        side_cached = dsa_torch._workspaces.get((0, int(side.cuda_stream)))
        side_size = dsa_torch.workspace_bytes(0, side)
        ops.topk_paged(*args, page_size=64, topk=64)
    side.synchronize()
    # The side stream has a workspace of its own (not the current stream's memory), kept between calls.
    # (Its size is not compared with the current stream's: either may have been grown by earlier tests,
    # PyTorch hands out pooled streams.)
    assert side_cached is not None and side_cached is not cached and side_size >= required
    assert side_cached.data_ptr() != cached.data_ptr()
    assert dsa_torch._workspaces.get((0, int(side.cuda_stream))) is side_cached
    assert dsa_torch.workspace_bytes(0, side) == side_size


@needs_gpu
def test_a_workspace_grown_after_capture_stays_alive_for_the_graph():
    small, large = spec6_case([100], seed=10), spec6_case([6000, 6000, 6000, 6000], seed=11)
    args = paged_tensors(small, "cuda")
    indices = torch.empty((1, 2048), dtype=torch.int32, device="cuda")
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        ops.topk_paged_out(*args, indices, None, page_size=64, sorted=True)
    before = dsa_torch.workspace_bytes(0, stream)
    with torch.cuda.stream(stream):  # a larger call on the same stream replaces the cached workspace
        ops.topk_paged(*paged_tensors(large, "cuda"), page_size=64, topk=2048)
    stream.synchronize()
    if dsa_torch.workspace_bytes(0, stream) > before:
        assert any(t.numel() == before for t in dsa_torch._retired)
    graph.replay()
    torch.cuda.synchronize()
    direct = ops.topk_paged(*args, page_size=64, topk=2048, sorted=True)
    torch.cuda.synchronize()
    assert torch.equal(indices, direct)
