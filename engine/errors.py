"""The one exception type the CLI and the language server turn into a clear message."""


class UserError(Exception):
    """Bad input or an unusable environment, explained in one sentence for the user.

    Raised anywhere in the engine; the CLI prints ``str(error)`` and exits with status 2, the
    language server shows it with ``window/showMessage``. Never raise it for bugs.
    """
