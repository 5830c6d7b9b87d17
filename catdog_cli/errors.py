"""The one exception type a user can cause: the CLI prints its message as one line, no traceback."""

import sys


class CatdogError(Exception):
    """A problem with the user's input or environment, explained in one line."""


# what running out of memory tells the user: the CLI prints it, compare records it per cell
OUT_OF_MEMORY = "out of memory: try a smaller --batch-size (or --image-size)"

# the CPU allocator has no exception type of its own: a RuntimeError that says this
_CPU_ALLOCATOR_FAILED = "DefaultCPUAllocator: can't allocate memory"


def out_of_memory(exc: BaseException) -> bool:
    """torch ran out of GPU memory (its own type) or CPU memory (the allocator's message); torch is not imported
    for the question."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and _CPU_ALLOCATOR_FAILED in str(exc)
    )
