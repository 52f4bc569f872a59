"""Objects that look like device arrays to the binding, for checks that must happen before any C call."""


class FakeCudaArray:
    """Looks like a CUDA tensor to the binding (interface + device); its pointer must never be used."""

    def __init__(self, shape, typestr, device=0, with_device=True):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr, "data": (0x1000, False),
                                         "strides": None, "version": 3}
        self._device = device
        if with_device:
            self.__dlpack_device__ = lambda: (2, self._device)


class FakeDlpackArray:
    """Only __dlpack_device__ (CUDA) and a __dlpack__ that must never be called."""

    def __init__(self, device=0):
        self._device = device

    def __dlpack_device__(self):
        return 2, self._device

    def __dlpack__(self, stream=None):
        raise AssertionError("the binding exported a tensor it should have refused by its device")
