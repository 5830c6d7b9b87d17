"""The one exception type a user can cause: the CLI prints its message as one line, no traceback."""


class CatdogError(Exception):
    """A problem with the user's input or environment, explained in one line."""


# what a torch.cuda.OutOfMemoryError tells the user: the CLI prints it, compare records it per cell
OUT_OF_MEMORY = "CUDA out of memory: try a smaller --batch-size (or --image-size)"
