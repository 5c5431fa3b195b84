"""The worker's two channels.

Host <-> worker: length-prefixed JSON frames over the worker's stdin/stdout.
T -> M (the result channel): T's fd 3 carries records, each ``EGR1`` + a per-test nonce + length +
a marshal payload, ending with an "end" or "result" record (the sealed runner buffers its records
after the header page and writes them at once). M parses them as they arrive
(``ResultFrame``) and treats anything else written there as the candidate's doing.

The nonce never exists as a Python object in T: M draws it into a private anonymous page (the
record header, ``HEADER``) before it starts T, T inherits the page with its memory and writes the
header straight from it, and M reads its own copy back only after T has started. No frame, local,
module or object that candidate code can walk to holds it (reading T's raw memory, through ctypes
or /proc/self/mem, is another matter: docs/architecture.md)."""

from __future__ import annotations

import ctypes
import json
import os
import struct

from .pristine import dumps, exit_now, length, loads

RESULT_MAGIC = b"EGR1"
RESULT_HEADER = 24  # magic (4) + nonce (16) + length (4)
MAX_RESULT = 32 << 20
RESULT_FD = 3  # T's end of the result pipe
INTERFERED = b"\xa5" * 16  # the nonce after the sealed runner caught candidate code running in a report

# C calls that keep the GIL (PyDLL, PYFUNCTYPE): no other Python thread runs while they do.
_LIBC = ctypes.PyDLL(None, use_errno=True)
raw_write = _LIBC.write
raw_write.argtypes, raw_write.restype = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t), ctypes.c_ssize_t
memmove = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(ctypes._memmove_addr)
memset = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)(ctypes._memset_addr)
HEADER: list = []  # [address of the header page], mapped once per worker
# After the header page, the sealed runner's record buffer: [fill (8 bytes)] [records...]; it is
# written to fd 3 in one go at the end (one wake-up of M per test), or when a record would not fit.
PAGE = 4096
RECORDS_BYTES = 1 << 20


def header_address() -> int:
    """The record header's page (magic, nonce, length), private and anonymous: a forked or cloned
    T gets its own copy."""
    if not HEADER:
        mmap = ctypes.CDLL(None, use_errno=True).mmap
        mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
        mmap.restype = ctypes.c_void_p
        address = mmap(None, PAGE + RECORDS_BYTES, 0x1 | 0x2, 0x02 | 0x20, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
        if not address or address == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), "could not map the result header")
        memmove(address, RESULT_MAGIC, 4)
        HEADER.append(address)
    return HEADER[0]


def draw_nonce() -> None:
    """M, before starting T: a fresh nonce into the header page (the bytes object dies at once)."""
    memmove(header_address() + 4, os.urandom(16), 16)


def drawn_nonce() -> bytes:
    """M, after starting T: its copy of the nonce, to check T's records against."""
    return ctypes.string_at(header_address() + 4, 16)


def read_exact(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int):
    header = read_exact(fd, 4)
    if header is None:
        return None
    body = read_exact(fd, struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_frame(fd: int, message: dict) -> None:
    body = json.dumps(message).encode()
    write_all(fd, struct.pack(">I", len(body)) + body)


def send_record(payload: bytes) -> bool:
    """T: one record, its header straight from the header page. False when fd 3 is gone."""
    address = header_address()
    memmove(address + 20, struct.pack(">I", length(payload)), 4)
    for data, size in ((address, RESULT_HEADER), (payload, length(payload))):
        done = 0
        while done < size:
            wrote = raw_write(RESULT_FD, data + done if done and type(data) is int else (data[done:] if done else data),
                              size - done)
            if wrote <= 0:
                return False
            done += wrote
    return True


def send_result(result: dict) -> None:
    """T's last act outside the sealed runner (pytest sessions, refusals): the whole result as one
    record, then exit without running any cleanup code."""
    try:
        payload = dumps(("result", result))
    except BaseException:  # noqa: BLE001 - e.g. an odd trace: send the verdict without it
        result["trace"] = None
        payload = dumps(("result", result))
    send_record(payload)
    exit_now(0)


class ResultFrame:
    """M's parser of what arrives on the result pipe (bytes may come in pieces): records, checked
    one by one, assembled into the result dict clean.py checks.

    The sealed runner sends one "step" record per step, numbered from 0 in the order of the
    task's steps, then "end"; a gap, a repeat, a step after the run stopped, or anything after the
    last record is the candidate's doing. The pytest path and refusals send one "result" record."""

    def __init__(self, nonce: bytes):
        self.nonce = nonce
        self.data = bytearray()
        self.raw: dict | None = None  # the assembled result once the last record arrived
        self.steps = {"error": None, "leaves": (), "block": None, "trace": None, "interrupted": False}
        self.next_step = 0
        self.stopped = False
        self.bad = ""

    def feed(self, data: bytes) -> str:
        """"more", "done" (``raw`` set) or "bad" (reason in ``bad``)."""
        self.data += data
        while self.data:
            if self.raw is not None:
                return self._bad("the program wrote to the result channel")
            frame = self.data
            if frame[:4] != RESULT_MAGIC[: len(frame)]:
                return self._bad("the program wrote to the result channel")
            if len(frame) < RESULT_HEADER:
                return "more"
            if frame[4:20] != self.nonce:
                return self._bad("the program ran code while its result was being reported"
                                 if frame[4:20] == INTERFERED else "the program wrote to the result channel")
            size = struct.unpack(">I", frame[20:24])[0]
            if size > MAX_RESULT:
                return self._bad("result too large")
            if len(frame) < RESULT_HEADER + size:
                return "more"
            payload = bytes(frame[RESULT_HEADER:RESULT_HEADER + size])
            del self.data[:RESULT_HEADER + size]
            problem = self._record(payload)
            if problem:
                return self._bad(problem)
        return "done" if self.raw is not None else "more"

    def _bad(self, reason: str) -> str:
        self.bad = reason
        return "bad"

    def _record(self, payload: bytes) -> str:
        try:
            record = loads(payload)
        except (ValueError, EOFError, TypeError):
            return "malformed result record"
        if type(record) is not tuple or not record:
            return "malformed result record"
        kind = record[0]
        if kind == "result" and len(record) == 2 and self.next_step == 0:
            self.raw = record[1]
            return ""
        if kind == "end" and len(record) == 2:
            self.steps["trace"] = record[1]
            self.raw = self.steps
            return ""
        if kind != "step" or len(record) != 5 or self.stopped:
            return "malformed result record"
        _, position, step, body, interrupted = record
        if position != self.next_step or type(position) is not int or step not in STEP_KINDS:
            return "result records out of order"
        self.next_step += 1
        if interrupted is True:
            self.steps["interrupted"] = self.stopped = True
        if step == "leaf":
            if type(body) is not bytes:
                return "malformed result record"
            self.steps["leaves"] += (body,)
        elif step == "block":
            self.steps["block"] = "ok" if body is None else body
            self.stopped = True
        elif body is not None:  # the program, its setup or the test's compilation failed
            self.steps["error"] = body
            self.stopped = True
        return ""


STEP_KINDS = ("exec", "load", "setup", "block", "leaf")
