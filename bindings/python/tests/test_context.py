"""Context lifetime and devices on a machine where only the CPU backend is sure to exist."""

import ctypes

import pytest

import dsa_indexer as dsa
from dsa_indexer import _api, _library
from dsa_indexer._errors import error_for_status


def test_cpu_context_basics():
    with dsa.Context(num_cpu_threads=2) as context:
        assert context.devices == () and context.num_devices == 0
        assert (context.nccl_rank, context.nccl_world_size) == (0, 1)
        context.synchronize()  # nothing can be pending on the CPU backend
        assert "cpu" in repr(context)
    assert "closed" in repr(context)
    context.close()  # closing twice is a no-op


def test_set_devices_is_all_or_nothing():
    with dsa.Context() as context:
        context.set_devices([])
        with pytest.raises(dsa.NoDeviceError):
            context.set_devices([4096])
        assert context.devices == () and context.num_devices == 0  # left as it was


def test_set_devices_refused_while_a_cache_exists():
    with dsa.Context() as context:
        with context.create_cache(1, page_size=32):
            with pytest.raises(dsa.InvalidArgumentError):
                context.set_devices([])


def test_bad_cache_config_is_the_library_s_call(ctx):
    with pytest.raises(dsa.DsaError) as info:
        ctx.create_cache(0)
    assert info.value.status in (dsa.Status.INVALID_ARGUMENT, dsa.Status.UNSUPPORTED)
    with pytest.raises(dsa.UnsupportedError):
        ctx.create_cache(1, page_size=48)


# ---- 0.2: NCCL unique ids and contexts spanning processes ----------------------------------------------------

def test_nccl_unique_id_of_this_build():
    """128 bytes from a build with NCCL; NOT_IMPLEMENTED, with the library's message, from one without."""
    try:
        unique_id = dsa.nccl_unique_id()
    except dsa.NotImplementedByLibraryError as e:
        assert e.status == dsa.Status.NOT_IMPLEMENTED and e.function == "dsa_nccl_unique_id_create"
        assert e.message and isinstance(e, NotImplementedError)
    else:
        assert type(unique_id) is bytes and len(unique_id) == dsa.DSA_NCCL_UNIQUE_ID_BYTES == 128
        assert any(unique_id)


def test_nccl_unique_id_returns_every_byte(monkeypatch):
    raw = bytes(range(1, 101)) + bytes(28)  # ends in NULs, which a c_char field would cut off

    def library(name, unique_id_ref):
        assert name == "dsa_nccl_unique_id_create"
        ctypes.memmove(ctypes.addressof(unique_id_ref._obj), raw, len(raw))
    monkeypatch.setattr(_api, "call", library)
    assert dsa.nccl_unique_id() == raw


def test_nccl_unique_id_not_implemented_raises(monkeypatch):
    def library(name, *args):
        raise error_for_status(dsa.Status.NOT_IMPLEMENTED, "built without NCCL", name)
    monkeypatch.setattr(_api, "call", library)
    with pytest.raises(dsa.NotImplementedByLibraryError, match="built without NCCL"):
        dsa.nccl_unique_id()


class Stop(Exception):
    pass


def test_context_config_carries_the_nccl_fields(monkeypatch):
    seen = []

    def library(name, config_ref, handle_ref):
        config = config_ref._obj
        seen.append((config.struct_size, config.num_devices, config.device_ids[0] if config.num_devices else None,
                     bytes(config.nccl_unique_id.contents) if config.nccl_unique_id else None, config.nccl_rank,
                     config.nccl_world_size))
        raise Stop
    monkeypatch.setattr(_api, "call", library)
    unique_id = bytes(range(128))
    for make in (lambda: dsa.Context.from_nccl_unique_id(unique_id, 2, 4, 3),
                 lambda: dsa.Context([3], nccl_unique_id=bytearray(unique_id), nccl_rank=2, nccl_world_size=4),
                 lambda: dsa.Context(), lambda: dsa.Context([1])):
        with pytest.raises(Stop):
            make()
    size = ctypes.sizeof(_library.ContextConfig)
    assert seen == [(size, 1, 3, unique_id, 2, 4), (size, 1, 3, unique_id, 2, 4), (size, 0, None, None, 0, 1),
                    (size, 1, 1, None, 0, 1)]


@pytest.mark.parametrize("devices, options, error, message", [
    ([0], dict(nccl_unique_id=bytes(127)), ValueError, "nccl_unique_id: must be 128 bytes, got 127"),
    ([0], dict(nccl_unique_id="x" * 128), TypeError, "nccl_unique_id: must be the bytes"),
    ([0], dict(nccl_unique_id=bytes(128), nccl_rank=2, nccl_world_size=2), ValueError,
     r"nccl_rank: must be in \[0, 2\)"),
    ([0], dict(nccl_unique_id=bytes(128), nccl_rank=-1, nccl_world_size=2), ValueError, "nccl_rank: must be in"),
    ([0], dict(nccl_unique_id=bytes(128), nccl_world_size=0), ValueError, "nccl_world_size: must be >= 1"),
    ([0, 1], dict(nccl_unique_id=bytes(128)), ValueError, "exactly one GPU per process, got 2"),
    (None, dict(nccl_unique_id=bytes(128)), ValueError, "exactly one GPU per process, got 0"),
    ([0], dict(nccl_rank=1, nccl_world_size=2), ValueError, "needs nccl_unique_id"),
])
def test_nccl_arguments_are_checked_before_the_library(no_c_calls, devices, options, error, message):
    with pytest.raises(error, match=message):
        dsa.Context(devices, **options)


def test_from_nccl_unique_id_checks_too(no_c_calls):
    with pytest.raises(ValueError, match="nccl_rank"):
        dsa.Context.from_nccl_unique_id(bytes(128), 4, 4, 0)
    with pytest.raises(TypeError, match="nccl_unique_id"):
        dsa.Context.from_nccl_unique_id(None, 0, 1, 0)


def test_a_context_spanning_processes_needs_its_gpu():
    try:
        unique_id = dsa.nccl_unique_id()
    except dsa.NotImplementedByLibraryError:
        unique_id = bytes(128)  # the library must refuse before it reads the id
    with pytest.raises(dsa.DsaError) as info:
        dsa.Context.from_nccl_unique_id(unique_id, 0, 1, 4096)
    assert info.value.status in (dsa.Status.NO_DEVICE, dsa.Status.NOT_IMPLEMENTED) and info.value.message
