"""Context lifetime and devices on a machine where only the CPU backend is sure to exist."""

import pytest

import dsa_indexer as dsa


def test_cpu_context_basics():
    with dsa.Context(num_cpu_threads=2) as context:
        assert context.devices == () and context.num_devices == 0
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
