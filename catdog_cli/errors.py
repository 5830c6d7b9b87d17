"""The one exception type a user can cause: the CLI prints its message as one line, no traceback."""

import sys


class CatdogError(Exception):
    """A problem with the user's input or environment, explained in one line."""


# what a torch.cuda.OutOfMemoryError tells the user: the CLI prints it, compare records it per cell
OUT_OF_MEMORY = "CUDA out of memory: try a smaller --batch-size (or --image-size)"


def out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error, told apart by its type; torch is not imported for the question."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)
