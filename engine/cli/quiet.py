"""Silences the third-party messages that a normal egcfg run cannot act on, each one by name.

Called first by the `egcfg` command and by `python -m lsp_server` (the editor's way in), before
torch, transformers or bitsandbytes are imported. Everything else still shows: progress bars,
egcfg's own lines, and every other warning of those libraries. (transformers' FutureWarning about
`past_key_values` is fixed at its source: the decode loop passes `cache=` where the forward has it.)
"""

from __future__ import annotations

import logging


def quiet_third_party() -> None:
    # bitsandbytes >= 0.50, on a CPU with AVX512-BF16, tries to fetch an optional faster 4-bit CPU
    # kernel from the Hugging Face hub (the `kernels` package) on import, and logs a warning when it
    # is not installed. egcfg never downloads code at run time; the built-in CPU kernel is used.
    # This logger holds only that message (bitsandbytes/backends/cpu/ops.py).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
