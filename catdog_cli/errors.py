"""The one exception type a user can cause: the CLI prints its message as one line, no traceback."""

import sys


class CatdogError(Exception):
    """A problem with the user's input or environment, explained in one line."""


# what running out of memory tells the user: the CLI prints it, compare records it per cell
OUT_OF_MEMORY = "out of memory: try a smaller --batch-size (or --image-size)"

# allocation failures that are not torch's OutOfMemoryError: the CPU allocator's, cuDNN's and cuBLAS's (their
# workspaces), and CUDA's own (outside the caching allocator)
_ALLOCATION_FAILED = (
    "DefaultCPUAllocator: can't allocate memory",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDA error: out of memory",
    "CUDA out of memory",
)


def out_of_memory(exc: BaseException | None) -> bool:
    """torch ran out of GPU or CPU memory: its own type, or an allocator's message, also when wrapped (torch.compile
    raises BackendCompilerFailed from the OutOfMemoryError its graph hit). torch is not imported for the question."""
    torch = sys.modules.get("torch")
    seen: set[int] = set()
    while torch is not None and exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
        if isinstance(exc, RuntimeError) and any(message in str(exc) for message in _ALLOCATION_FAILED):
            return True
        exc = exc.__cause__ or getattr(exc, "inner_exception", None)
    return False
