"""Zero-copy views of caller arrays: numpy (and anything with ``__array_interface__``), CUDA tensors through
``__cuda_array_interface__`` or DLPack (PyTorch, CuPy, ...). Nothing here imports numpy, torch or cupy:
frameworks are recognised by duck typing and, where a framework call is needed (its current stream, an
allocation), through the module that the caller's object already comes from.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

# DLPack device types (dlpack.h DLDeviceType) and data type codes (DLDataTypeCode).
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_DL_INT, _DL_UINT, _DL_FLOAT = 0, 1, 2
_DL_FLOAT8_E4M3FN = 10

_DL_BFLOAT, _DL_COMPLEX, _DL_BOOL = 4, 5, 6

# Array-interface type kinds and DLPack codes, named as numpy names dtypes (float64, not "<f8").
_TYPESTR_KINDS = {"i": "int", "u": "uint", "f": "float", "c": "complex"}
_DLPACK_KINDS = {_DL_INT: "int", _DL_UINT: "uint", _DL_FLOAT: "float", _DL_COMPLEX: "complex",
                 _DL_BFLOAT: "bfloat"}
_ITEMSIZES = {"uint8": 1, "int8": 1, "float8_e4m3fn": 1, "bool": 1, "int16": 2, "uint16": 2, "float16": 2,
              "bfloat16": 2, "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8,
              "complex64": 8, "complex128": 16}


@dataclass
class ArrayView:
    """What the C call needs to know about one array argument."""

    name: str                 # the argument's name, for error messages
    ptr: int                  # address of element [0, 0, ...]
    shape: Tuple[int, ...]
    strides: Tuple[int, ...]  # in elements
    dtype: str                # numpy's name: "uint8", "float8_e4m3fn", "float32", "float64", ...
    device: Optional[int]     # None: host memory; else the CUDA device ordinal
    readonly: bool = False
    keepalive: List[Any] = field(default_factory=list)  # the exporter and any DLPack capsule

    @property
    def size(self) -> int:
        n = 1
        for extent in self.shape:
            n *= extent
        return n

    @property
    def itemsize(self) -> int:
        return _ITEMSIZES.get(self.dtype, 0)

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    def is_c_contiguous(self, from_dim: int = 0) -> bool:
        """True when dims from_dim.. are row-major without gaps (extent-1 dims may have any stride)."""
        expected = 1
        for extent, stride in reversed(list(zip(self.shape, self.strides))[from_dim:]):
            if extent != 1 and stride != expected:
                return False
            expected *= extent
        return True

    def where(self) -> str:
        return "host memory" if self.device is None else f"CUDA device {self.device}"


def _framework(obj: Any) -> str:
    """'torch', 'cupy', 'numpy' or another top-level module name: where the object's type lives."""
    return type(obj).__module__.split(".")[0]


def _dtype_override(obj: Any) -> Optional[str]:
    """float8_e4m3fn arrays usually cannot say so through the interfaces (numpy + ml_dtypes reports a
    void type, older PyTorch has no typestr for it): read the framework's dtype name instead."""
    name = str(getattr(obj, "dtype", "")).rsplit(".", 1)[-1]
    return name if name == "float8_e4m3fn" else None


def _from_typestr(typestr: str) -> str:
    """numpy's name of an array-interface typestr ("<f8" -> "float64"); the typestr itself for kinds no
    call accepts and numpy names otherwise (datetimes, records, ...)."""
    kind, size = typestr[1:2], typestr[2:]
    if kind == "b" and size == "1":
        return "bool"
    if kind in _TYPESTR_KINDS and size.isdigit():
        return f"{_TYPESTR_KINDS[kind]}{int(size) * 8}"
    return typestr


def _from_dlpack_dtype(code: int, bits: int, lanes: int) -> str:
    """The numpy-style name of a DLPack data type (code, bits, lanes)."""
    if lanes != 1:
        return f"vector of {lanes}"
    if (code, bits) == (_DL_FLOAT8_E4M3FN, 8):
        return "float8_e4m3fn"
    if (code, bits) == (_DL_BOOL, 8):
        return "bool"
    if code in _DLPACK_KINDS:
        return f"{_DLPACK_KINDS[code]}{bits}"
    return f"DLPack type code {code} of {bits} bits"


def _element_strides(name: str, shape: Tuple[int, ...], byte_strides: Optional[Sequence[int]],
                     itemsize: int) -> Tuple[int, ...]:
    if byte_strides is None:  # the interfaces' way of saying C-contiguous
        strides, step = [], 1
        for extent in reversed(shape):
            strides.append(step)
            step *= extent
        return tuple(reversed(strides))
    if itemsize == 0 or any(s % itemsize for s in byte_strides):
        raise ValueError(f"{name}: strides {tuple(byte_strides)} (bytes) are not whole elements")
    return tuple(s // itemsize for s in byte_strides)


def _interface(obj: Any, name: str, failures: List[str]) -> Any:
    """obj.<name>, or None when obj has no such attribute. An exporter may have the attribute and still
    refuse (PyTorch raises KeyError or RuntimeError for dtypes or tensors it cannot describe): that is
    noted in failures and treated as absent, so that another interface can be tried."""
    try:
        return getattr(obj, name)
    except AttributeError:
        return None
    except (TypeError, KeyError, ValueError, RuntimeError) as e:
        failures.append(f"{name}: {type(e).__name__}: {e}")
        return None


def device_of(obj: Any) -> Optional[int]:
    """The CUDA device holding obj's data, or None for host memory. Raises TypeError for other devices."""
    if hasattr(obj, "__dlpack_device__"):
        device_type, device_id = obj.__dlpack_device__()
        if device_type in (_DL_CUDA, _DL_CUDA_MANAGED):
            return int(device_id)
        if device_type in (_DL_CPU, _DL_CUDA_HOST):
            return None
        raise TypeError(f"arrays on DLPack device type {device_type} are not supported (only CPU and CUDA)")
    if _interface(obj, "__cuda_array_interface__", []) is not None:
        device = getattr(obj, "device", None)
        for attribute in ("index", "id"):  # torch.device.index, cupy.cuda.Device.id
            ordinal = getattr(device, attribute, None)
            if isinstance(ordinal, int):
                return ordinal
        raise TypeError(f"cannot tell which GPU holds the {type(obj).__name__}: it has "
                        "__cuda_array_interface__ but no __dlpack_device__ or device attribute")
    return None


def _from_array_interface(obj: Any, name: str) -> ArrayView:
    interface = obj.__array_interface__
    data = interface.get("data")
    if not isinstance(data, tuple):
        raise TypeError(f"{name}: arrays exposing a buffer object instead of a data pointer are not supported")
    dtype = _dtype_override(obj) or _from_typestr(interface["typestr"])
    shape = tuple(int(x) for x in interface["shape"])
    strides = _element_strides(name, shape, interface.get("strides"), _ITEMSIZES.get(dtype, 0))
    return ArrayView(name, int(data[0] or 0), shape, strides, dtype, None, bool(data[1]), [obj])


def _from_cuda_array_interface(obj: Any, name: str, interface: Dict[str, Any]) -> ArrayView:
    dtype = _dtype_override(obj) or _from_typestr(interface["typestr"])
    shape = tuple(int(x) for x in interface["shape"])
    strides = _element_strides(name, shape, interface.get("strides"), _ITEMSIZES.get(dtype, 0))
    ptr, readonly = interface["data"]
    return ArrayView(name, int(ptr or 0), shape, strides, dtype, device_of(obj), bool(readonly), [obj])


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


_capsule_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_get_pointer.restype = ctypes.c_void_p
_capsule_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _from_dlpack(obj: Any, name: str, stream: Optional[int]) -> ArrayView:
    """Reads the DLTensor of an unversioned "dltensor" capsule. The capsule is not consumed: it stays
    alive in keepalive, and its own destructor releases the tensor when the view is dropped."""
    device = device_of(obj)
    if device is None:
        capsule = obj.__dlpack__()
    else:
        # DLPack's stream argument: the consumer's stream, 1 standing for the legacy default stream.
        capsule = obj.__dlpack__(stream=stream if stream else 1)
    # DLManagedTensor starts with its DLTensor, so the capsule's pointer is the DLTensor's address.
    tensor = _DLTensor.from_address(_capsule_get_pointer(capsule, b"dltensor"))
    dtype = _from_dlpack_dtype(tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes)
    dtype = _dtype_override(obj) or dtype
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    if tensor.strides:
        strides = tuple(tensor.strides[i] for i in range(tensor.ndim))  # already in elements
    else:
        strides = _element_strides(name, shape, None, 1)
    ptr = (tensor.data or 0) + tensor.byte_offset
    return ArrayView(name, ptr, shape, strides, dtype, device, False, [obj, capsule])


def _from_torch_attributes(obj: Any, name: str) -> ArrayView:
    """Last resort for PyTorch tensors whose dtype neither interface can export (float8 in older releases)."""
    device = obj.device.index if obj.device.type == "cuda" else None
    if obj.device.type not in ("cuda", "cpu"):
        raise TypeError(f"{name}: tensors on device '{obj.device.type}' are not supported")
    if device is None and obj.device.type == "cuda":
        device = 0
    dtype = str(obj.dtype).rsplit(".", 1)[-1]
    return ArrayView(name, int(obj.data_ptr()), tuple(obj.shape), tuple(obj.stride()), dtype, device,
                     False, [obj])


def as_array(obj: Any, name: str, stream: Optional[int] = None) -> ArrayView:
    """A view of obj without copying it. `stream` is the CUDA stream the call will run on (DLPack producers
    order their pending work before it). Raises TypeError for objects that are not arrays."""
    failures: List[str] = []
    cuda_interface = _interface(obj, "__cuda_array_interface__", failures)
    if cuda_interface is not None:
        return _from_cuda_array_interface(obj, name, cuda_interface)
    if _interface(obj, "__array_interface__", failures) is not None:
        return _from_array_interface(obj, name)
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        try:
            return _from_dlpack(obj, name, stream)
        except (TypeError, ValueError, BufferError, RuntimeError) as e:
            failures.append(f"__dlpack__: {e}")
    if _framework(obj) == "torch" and hasattr(obj, "data_ptr"):
        return _from_torch_attributes(obj, name)
    detail = f" ({'; '.join(failures)})" if failures else ""
    raise TypeError(f"{name}: expected a numpy array or a CUDA tensor (DLPack or __cuda_array_interface__), "
                    f"got {type(obj).__module__}.{type(obj).__qualname__}{detail}")


def resolve_stream(stream: Any, template: Any, device: Optional[int]) -> Optional[int]:
    """The cudaStream_t (as an int) a GPU call runs on: the one given (an int, a torch.cuda.Stream or a
    cupy Stream), else the current stream of the template tensor's framework on its device."""
    if stream is not None:
        for attribute in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
            if hasattr(stream, attribute):
                return int(getattr(stream, attribute))
        return int(stream)
    if device is None:
        return None
    framework = _framework(template)
    if framework == "torch":
        return int(sys.modules["torch"].cuda.current_stream(device).cuda_stream)
    if framework == "cupy":
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(device):
            return int(cupy.cuda.get_current_stream().ptr)
    interface = _interface(template, "__cuda_array_interface__", [])
    if isinstance(interface, dict) and interface.get("stream"):
        return int(interface["stream"])  # the stream the producer says its data is valid on
    return 0  # the legacy default stream


def wait_for_current_stream(template: Any, device: int) -> None:
    """Blocks until the work queued on the template framework's current stream is done: the synchronous
    owned-cache calls read device arrays on the library's stream, which knows nothing of the caller's."""
    framework = _framework(template)
    if framework == "torch":
        sys.modules["torch"].cuda.current_stream(device).synchronize()
    elif framework == "cupy":
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(device):
            cupy.cuda.get_current_stream().synchronize()


def empty(template: Any, device: Optional[int], shape: Tuple[int, ...], dtype: str,
          stream: Optional[int] = None) -> Any:
    """A new uninitialised array of the template's framework on `device` (numpy for host memory unless the
    template is a torch CPU tensor). GPU memory is allocated on `stream`, the stream the call runs on: the
    frameworks' caching allocators then reuse it only after the work queued there, even when the binding
    drops its last reference (a workspace) right after the asynchronous call."""
    framework = _framework(template)
    if framework == "torch":
        torch = sys.modules["torch"]
        if device is None or stream is None or stream == torch.cuda.current_stream(device).cuda_stream:
            return torch.empty(shape, dtype=getattr(torch, dtype), device=template.device)
        with torch.cuda.stream(torch.cuda.ExternalStream(stream, device=template.device)):
            return torch.empty(shape, dtype=getattr(torch, dtype), device=template.device)
    if framework == "cupy" and device is not None:
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(device):
            if stream is None or stream == cupy.cuda.get_current_stream().ptr:
                return cupy.empty(shape, dtype=dtype)
            with cupy.cuda.ExternalStream(stream):
                return cupy.empty(shape, dtype=dtype)
    if device is None:
        try:
            import numpy
        except ImportError:
            raise TypeError("numpy is needed to allocate outputs; pass the output arrays instead") from None
        return numpy.empty(shape, dtype=dtype)
    raise TypeError(f"cannot allocate a {framework} array on CUDA device {device}; pass the output arrays")
