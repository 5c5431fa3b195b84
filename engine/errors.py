"""The one exception type the CLI and the language server turn into a clear message."""


class UserError(Exception):
    """Bad input or an unusable environment, explained in one sentence for the user.

    Raised anywhere in the engine; the CLI prints ``str(error)`` and exits with status 2, the
    language server shows it with ``window/showMessage``. Never raise it for bugs.
    """


def error_line(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of its message` (the line cut at `limit`): why something fell back, in a
    report or a note, without the rest of a long traceback-like message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:limit] if lines else ''}"
