"""Silences the third-party messages that a normal egcfg run cannot act on, each one by name.

Called first by the `egcfg` command and by `python -m lsp_server` (the editor's way in), before
torch, transformers or bitsandbytes are imported. Everything else still shows: progress bars,
egcfg's own lines, and every other warning of those libraries.
"""

from __future__ import annotations

import logging
import warnings


def quiet_third_party() -> None:
    # bitsandbytes >= 0.50, on a CPU with AVX512-BF16, tries to fetch an optional faster 4-bit CPU
    # kernel from the Hugging Face hub (the `kernels` package) on import, and logs a warning when it
    # is not installed. egcfg never downloads code at run time; the built-in CPU kernel is used.
    # This logger holds only that message (bitsandbytes/backends/cpu/ops.py).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # transformers 5.2x warns on every forward that passes `past_key_values` (it becomes `cache`
    # in 5.40). The engine's decode loop is being moved to `cache`; until then pyproject caps
    # transformers below 5.40, so the warning tells a user nothing they can act on.
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
