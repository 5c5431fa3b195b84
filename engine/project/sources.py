"""Reading the user's Python files: decoded the way Python would, with one-sentence errors."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

from engine.errors import UserError


def read_source(path: Path) -> str:
    """A Python file's text, decoded the way Python would (coding cookie, BOM, else UTF-8)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a Python file") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, LookupError):
        raise UserError(f"{path} declares an encoding Python does not know") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not valid {error.encoding} text (byte {error.start})") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")
