"""topk_paged on the CPU backend with numpy arrays: known answers, index modes, MTP rows, layouts,
caller-given outputs, and random inputs against the float64 oracle."""

import numpy as np
import pytest

import dsa_indexer as dsa
from paged_case import check_case, ramp_case, spec6_case

P = 32


def slot(case, b, p):
    return int(case.block_table[b, p // case.page_size]) * case.page_size + p % case.page_size


def test_known_answer_sorted_global_slots_and_scores(ctx):
    case = ramp_case([40, 5])
    indices, scores = ctx.topk_paged(*case.args(), page_size=P, topk=8, sorted=True, return_scores=True)
    assert indices.dtype == np.int32 and indices.shape == (2, 8)
    assert indices[0].tolist() == [slot(case, 0, p) for p in range(39, 31, -1)]
    assert indices[1].tolist() == [slot(case, 1, p) for p in range(4, -1, -1)] + [-1] * 3
    assert scores[0].tolist() == [float(p + 1) for p in range(39, 31, -1)]
    assert scores[1, :5].tolist() == [5.0, 4.0, 3.0, 2.0, 1.0] and np.all(np.isneginf(scores[1, 5:]))


def test_logical_indices(ctx):
    case = ramp_case([40, 5])
    indices = ctx.topk_paged(*case.args(), page_size=P, topk=8, sorted=True, logical_indices=True)
    assert indices[0].tolist() == list(range(39, 31, -1))
    assert indices[1].tolist() == [4, 3, 2, 1, 0, -1, -1, -1]


def test_unsorted_returns_the_same_set(ctx):
    case = ramp_case([40, 5])
    unsorted = ctx.topk_paged(*case.args(), page_size=P, topk=8, logical_indices=True)
    assert sorted(unsorted[0].tolist()) == list(range(32, 40))
    assert sorted(x for x in unsorted[1].tolist() if x >= 0) == [0, 1, 2, 3, 4]


def test_mtp_rows_follow_the_causal_rule(ctx):
    # next_n 2: row j of a sequence of n tokens sees positions [0, n - 2 + j + 1).
    case = ramp_case([10, 1], next_n=2)
    indices = ctx.topk_paged(*case.args(), page_size=P, topk=3, sorted=True, logical_indices=True)
    assert indices.shape == (4, 3)
    assert indices.tolist() == [[8, 7, 6], [9, 8, 7], [-1, -1, -1], [0, -1, -1]]
    # The same q flattened to [B * next_n, H, D] with next_n given.
    flat = case.q.reshape(4, case.heads, 128)
    again = ctx.topk_paged(flat, *case.args()[1:], page_size=P, topk=3, next_n=2, sorted=True,
                           logical_indices=True)
    assert np.array_equal(again, indices)


def test_weights_may_be_three_dimensional(ctx):
    case = ramp_case([10, 3], next_n=2)
    expected = ctx.topk_paged(*case.args(), page_size=P, topk=4, sorted=True)
    weights = case.weights.reshape(2, 2, case.heads)
    got = ctx.topk_paged(case.q, case.k_cache, weights, case.seq_lens, case.block_table, page_size=P, topk=4,
                         sorted=True)
    assert np.array_equal(got, expected)


def test_block_table_rows_may_be_apart(ctx):
    case = ramp_case([70, 33, 2])
    expected = ctx.topk_paged(*case.args(), page_size=P, topk=16, sorted=True)
    wide = np.full((3, case.block_table.shape[1] + 5), 12345, np.int32)
    wide[:, : case.block_table.shape[1]] = case.block_table
    view = wide[:, : case.block_table.shape[1]]  # row stride 8 elements, max_pages 3
    got = ctx.topk_paged(case.q, case.k_cache, case.weights, case.seq_lens, view, page_size=P, topk=16,
                         sorted=True)
    assert np.array_equal(got, expected)


def test_k_cache_layouts(ctx):
    case = ramp_case([70, 5])
    expected = ctx.topk_paged(*case.args(), page_size=P, topk=16, sorted=True)
    pages = case.k_cache.shape[0]
    as_tokens = case.k_cache.reshape(pages, P, 132)  # how engines often shape it: [pages, P, D + 4]
    got = ctx.topk_paged(case.q, as_tokens, case.weights, case.seq_lens, case.block_table, page_size=P,
                         topk=16, sorted=True)
    assert np.array_equal(got, expected)
    padded = np.zeros((pages, P * 132 + 64), np.uint8)  # page stride above the page size
    padded[:, : P * 132] = case.k_cache
    got = ctx.topk_paged(case.q, padded[:, : P * 132], case.weights, case.seq_lens, case.block_table,
                         page_size=P, topk=16, sorted=True)
    assert np.array_equal(got, expected)


def test_outputs_given_are_filled_in_place(ctx):
    case = ramp_case([40, 5])
    indices = np.full((2, 8), 7, np.int32)
    scores = np.zeros((2, 8), np.float32)
    got_indices, got_scores = ctx.topk_paged(*case.args(), page_size=P, topk=8, sorted=True, indices=indices,
                                             scores=scores)
    assert got_indices is indices and got_scores is scores
    assert indices[1, 5] == -1 and scores[0, 0] == 40.0


def test_module_functions_mirror_the_c_names(ctx):
    case = ramp_case([40, 5])
    assert np.array_equal(dsa.topk_paged(ctx, *case.args(), page_size=P, topk=8, sorted=True),
                          ctx.topk_paged(*case.args(), page_size=P, topk=8, sorted=True))
    assert dsa.topk_paged_workspace_size(ctx, 2, 2, 4, page_size=P) == 0
    assert ctx.topk_ragged_workspace_size(4, 100) == 0


def test_cpu_thread_count_does_not_change_results():
    case = spec6_case([300, 1000], seed=3)
    with dsa.Context(num_cpu_threads=1) as one, dsa.Context() as many:
        a = one.topk_paged(*case.args(), **case.kwargs(), topk=100, sorted=True)
        b = many.topk_paged(*case.args(), **case.kwargs(), topk=100, sorted=True)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("logical", [False, True])
@pytest.mark.parametrize("next_n", [1, 2])
def test_random_inputs_meet_the_spec(ctx, logical, next_n):
    # Lengths around the page size and k: 0, 1, < k, = k, not a multiple of P, long.
    case = spec6_case([0, 1, 63, 64, 65, 300, 1500], next_n=next_n, seed=7 + next_n)
    indices = ctx.topk_paged(*case.args(), **case.kwargs(), topk=64, logical_indices=logical)
    check_case(case, indices, 64, logical)


def test_heads_32_page_32(ctx):
    case = spec6_case([31, 33, 500], heads=32, page_size=32, seed=11)
    indices = ctx.topk_paged(*case.args(), page_size=32, topk=40, sorted=True, logical_indices=True)
    check_case(case, indices, 40, True)


class DLPackOnly:
    """A host array visible only through DLPack (like a PyTorch CPU tensor)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, stream=None):
        return self._array.__dlpack__()

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_producers_are_read_without_copies(ctx):
    if not hasattr(np.empty(1), "__dlpack__"):
        pytest.skip("this numpy has no DLPack export")
    case = ramp_case([40, 5])
    expected = ctx.topk_paged(*case.args(), page_size=P, topk=8, sorted=True)
    wrapped = [DLPackOnly(a) for a in case.args()]
    indices = np.zeros((2, 8), np.int32)
    ctx.topk_paged(*wrapped, page_size=P, topk=8, sorted=True, indices=DLPackOnly(indices))
    assert np.array_equal(indices, expected)


class RefusingCudaInterface(DLPackOnly):
    """Has __cuda_array_interface__ but cannot describe itself through it (as PyTorch float8 tensors):
    the binding must fall back to DLPack."""

    @property
    def __cuda_array_interface__(self):
        raise KeyError("no typestr for this dtype")


def test_an_exporter_refusing_one_interface_is_read_through_another(ctx):
    if not hasattr(np.empty(1), "__dlpack__"):
        pytest.skip("this numpy has no DLPack export")
    case = ramp_case([40, 5])
    expected = ctx.topk_paged(*case.args(), page_size=P, topk=8, sorted=True)
    got = ctx.topk_paged(RefusingCudaInterface(case.q), *case.args()[1:], page_size=P, topk=8, sorted=True)
    assert np.array_equal(got, expected)


def test_float8_dtype_is_accepted_when_ml_dtypes_is_installed(ctx):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    case = ramp_case([40, 5])
    expected = ctx.topk_paged(*case.args(), page_size=P, topk=8, sorted=True)
    q8 = case.q.view(ml_dtypes.float8_e4m3fn)
    got = ctx.topk_paged(q8, *case.args()[1:], page_size=P, topk=8, sorted=True)
    assert np.array_equal(got, expected)
