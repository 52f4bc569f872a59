"""Statuses, the exception hierarchy, and failures the library reports (status and message carried)."""

import re
from pathlib import Path

import numpy as np
import pytest

import dsa_indexer as dsa
from paged_case import ramp_case

HEADER = Path(__file__).resolve().parents[3] / "include" / "dsa_indexer.h"


def test_status_values_match_the_header():
    in_header = {name: int(value) for name, value in
                 re.findall(r"^\s*DSA_STATUS_(\w+)\s*=\s*(\d+)", HEADER.read_text(), re.MULTILINE)}
    assert in_header == {status.name: int(status) for status in dsa.Status}


def test_status_strings_come_from_the_library():
    for status in dsa.Status:
        assert dsa.status_string(status) == "DSA_STATUS_" + status.name
    assert dsa.status_string(999) == "DSA_STATUS_UNKNOWN"


def test_unsupported_parameter_raises_with_status_and_message(ctx):
    case = ramp_case([5])
    with pytest.raises(dsa.UnsupportedError) as info:
        ctx.topk_paged(*case.args(), page_size=32, topk=4096)
    error = info.value
    assert isinstance(error, dsa.DsaError) and isinstance(error, ValueError)
    assert error.status == dsa.Status.UNSUPPORTED
    assert "topk" in error.message and "4096" in error.message
    assert error.message == dsa.last_error_message()
    assert "DSA_STATUS_UNSUPPORTED" in str(error) and "dsa_topk_paged" in str(error)


def test_library_side_check_seq_len_beyond_the_table(ctx):
    case = ramp_case([5])
    case.seq_lens[0] = 33  # one page of 32 in the table
    with pytest.raises(dsa.InvalidArgumentError) as info:
        ctx.topk_paged(*case.args(), page_size=32, topk=4)
    assert info.value.status == dsa.Status.INVALID_ARGUMENT and info.value.message


def test_a_missing_gpu_is_no_device():
    with pytest.raises(dsa.NoDeviceError) as info:
        dsa.Context([4096])
    assert info.value.status == dsa.Status.NO_DEVICE and info.value.message


def test_every_status_maps_to_its_own_class():
    from dsa_indexer._errors import error_for_status
    classes = {type(error_for_status(s, "m")) for s in dsa.Status if s != dsa.Status.SUCCESS}
    assert len(classes) == len(dsa.Status) - 1
    unknown = error_for_status(77, "future status")
    assert type(unknown) is dsa.DsaError and unknown.status == 77 and unknown.message == "future status"


def test_context_with_a_live_cache_cannot_close():
    context = dsa.Context()
    cache = context.create_cache(2, page_size=32)
    with pytest.raises(dsa.InvalidArgumentError):
        context.close()
    cache.close()
    cache.close()  # twice is a no-op
    context.close()
    with pytest.raises(ValueError, match="closed"):
        context.num_devices


def test_successful_call_clears_the_message(ctx):
    case = ramp_case([5])
    with pytest.raises(dsa.UnsupportedError):
        ctx.topk_paged(*case.args(), page_size=32, topk=0)
    ctx.topk_paged(*case.args(), page_size=32, topk=2)
    assert dsa.last_error_message() == ""
    assert np.all(ctx.topk_paged(*case.args(), page_size=32, topk=2) >= 0)
