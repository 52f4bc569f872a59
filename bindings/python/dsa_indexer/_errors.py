"""Status codes of the C API and the exceptions that carry them."""

from __future__ import annotations

import enum
from typing import Dict, Type


class Status(enum.IntEnum):
    """``dsa_status_t``: values are fixed forever by the C header (new ones are only appended)."""

    SUCCESS = 0
    INVALID_ARGUMENT = 1
    UNSUPPORTED = 2
    OUT_OF_MEMORY = 3
    NO_DEVICE = 4
    CUDA_ERROR = 5
    NCCL_ERROR = 6
    INSUFFICIENT_WORKSPACE = 7
    DEVICE_INPUT_ERROR = 8
    NOT_IMPLEMENTED = 9
    INTERNAL_ERROR = 10


class LibraryNotFoundError(OSError):
    """libdsa_indexer could not be found or loaded (see ``dsa_indexer.load_library``)."""


class LibraryVersionError(RuntimeError):
    """The loaded libdsa_indexer has a version this package cannot use."""


class DsaError(Exception):
    """A call into libdsa_indexer failed.

    Attributes:
        status: the ``Status`` (or the raw int for a status newer than this package).
        message: the library's message for the failed call (``dsa_last_error_message``).
    """

    def __init__(self, status: int, message: str, function: str = "") -> None:
        try:
            self.status: "Status | int" = Status(status)
            name = "DSA_STATUS_" + Status(status).name
        except ValueError:
            self.status = status
            name = f"DSA_STATUS_{status}"
        self.message = message
        self.function = function
        where = f"{function}: " if function else ""
        super().__init__(f"{where}{name}: {message}" if message else f"{where}{name}")


class InvalidArgumentError(DsaError, ValueError):
    """DSA_STATUS_INVALID_ARGUMENT: a bad value the library found (null, negative size, aliasing...)."""


class UnsupportedError(DsaError, ValueError):
    """DSA_STATUS_UNSUPPORTED: a parameter outside the supported range (SPEC section 3)."""


class OutOfMemoryError(DsaError, MemoryError):
    """DSA_STATUS_OUT_OF_MEMORY: a host or device allocation failed."""


class NoDeviceError(DsaError):
    """DSA_STATUS_NO_DEVICE: a requested GPU does not exist, or the library was built without CUDA."""


class CudaError(DsaError):
    """DSA_STATUS_CUDA_ERROR: the CUDA runtime reported an error."""


class NcclError(DsaError):
    """DSA_STATUS_NCCL_ERROR: NCCL reported an error."""


class InsufficientWorkspaceError(DsaError, ValueError):
    """DSA_STATUS_INSUFFICIENT_WORKSPACE: the workspace is smaller than the size query returned."""


class DeviceInputError(DsaError):
    """DSA_STATUS_DEVICE_INPUT_ERROR: a GPU kernel met a bad block-table entry or seq_len."""


class NotImplementedByLibraryError(DsaError, NotImplementedError):
    """DSA_STATUS_NOT_IMPLEMENTED: a valid request this build or backend cannot serve."""


class InternalError(DsaError):
    """DSA_STATUS_INTERNAL_ERROR: a library bug; please report it with the message."""


_ERROR_CLASSES: Dict[int, Type[DsaError]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.OUT_OF_MEMORY: OutOfMemoryError,
    Status.NO_DEVICE: NoDeviceError,
    Status.CUDA_ERROR: CudaError,
    Status.NCCL_ERROR: NcclError,
    Status.INSUFFICIENT_WORKSPACE: InsufficientWorkspaceError,
    Status.DEVICE_INPUT_ERROR: DeviceInputError,
    Status.NOT_IMPLEMENTED: NotImplementedByLibraryError,
    Status.INTERNAL_ERROR: InternalError,
}


def error_for_status(status: int, message: str, function: str = "") -> DsaError:
    """The exception for a failed call: the subclass of its status, or DsaError for an unknown one."""
    return _ERROR_CLASSES.get(status, DsaError)(status, message, function)
