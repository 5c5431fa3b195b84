"""`egcfg serve`: start the language server on stdio (default) or TCP."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

HELP = "start the language server (stdio by default)"  # `egcfg --help` (registered in pyproject)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    parser.add_argument("--tcp", type=int, metavar="PORT", help="listen on a TCP port instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="address for --tcp (default: %(default)s)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="server log level on stderr (default: %(default)s)")
    parser.add_argument("--log-file", metavar="PATH", help="write the server log to a file instead of stderr")
    parser.add_argument("--python", default="", metavar="PATH",
                        help="the project's interpreter for the tests (the python setting, when the client sends none); "
                             "default: a .venv/venv at the workspace root, else egcfg's own")


class LockedStream:
    """The protocol's output with a lock around each message, so that the GPU worker thread can
    send a streamed line itself instead of waiting for the event loop (the 20 ms bar)."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._stream.write(data)
            self._stream.flush()

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def close(self) -> None:
        self._stream.close()


def protect_stdout():
    """The protocol's own stdout, with fd 1 and sys.stdout pointing at stderr from now on.

    Anything that prints (a library, a stray print, C code writing to fd 1) would corrupt the LSP
    stream; after this it lands on stderr instead."""
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return protocol_out


def main(args: argparse.Namespace) -> int:
    from engine.cli.quiet import quiet_third_party

    quiet_third_party()  # `python -m lsp_server` does not pass through the egcfg command
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    where = {"filename": args.log_file} if args.log_file else {"stream": sys.stderr}
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", **where)
    from lsp_server.server import build_server

    if args.tcp is not None:
        if not 0 < args.tcp < 65536:
            from engine.errors import UserError
            raise UserError(f"--tcp needs a port between 1 and 65535, got {args.tcp}")
        sys.stdout = sys.stderr  # stdout carries nothing in TCP mode either
        server = build_server()
        _initial_python(server, args)
        server.start_tcp(args.host, args.tcp)
        return 0
    protocol_out = LockedStream(protect_stdout())
    server = build_server()
    _initial_python(server, args)
    server.thread_safe_output = True
    server.start_io(sys.stdin.buffer, protocol_out)
    return 0


def _initial_python(server, args: argparse.Namespace) -> None:
    """--python sets the python setting's starting value (a client's own value still wins)."""
    if getattr(args, "python", ""):
        from dataclasses import replace

        server.settings = replace(server.settings, python=args.python.strip())
