"""The worker's two channels.

Host <-> worker: length-prefixed JSON frames over the worker's stdin/stdout.
T -> M (the result channel): one frame on T's fd 3, ``EGR1`` + a per-test nonce + length + a
marshal payload. T packs it (``send_result``); M parses it as it arrives (``ResultFrame``) and
treats anything else written there as the candidate's doing."""

from __future__ import annotations

import json
import os
import struct

from .pristine import dumps, exit_now, length, write

RESULT_MAGIC = b"EGR1"
RESULT_HEADER = 24  # magic (4) + nonce (16) + length (4)
MAX_RESULT = 32 << 20
RESULT_FD = 3  # T's end of the result pipe


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


def send_result(result: dict, nonce: bytes) -> None:
    """T's last act: the result frame on fd 3, then exit without running any cleanup code."""
    try:
        payload = dumps(result)
    except BaseException:  # noqa: BLE001 - e.g. an odd trace: send the verdict without it
        result["trace"] = None
        payload = dumps(result)
    data = RESULT_MAGIC + nonce + struct.pack(">I", length(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[write(RESULT_FD, view):]
    exit_now(0)


class ResultFrame:
    """M's parser of what arrives on the result pipe (bytes may come in pieces)."""

    def __init__(self, nonce: bytes):
        self.nonce = nonce
        self.data = bytearray()
        self.payload: bytes | None = None
        self.bad = ""

    def feed(self, data: bytes) -> str:
        """"more", "done" (payload set) or "bad" (reason in ``bad``)."""
        self.data += data
        frame = self.data
        if frame[:4] != RESULT_MAGIC[: len(frame)]:
            self.bad = "the program wrote to the result channel"
            return "bad"
        if len(frame) < RESULT_HEADER:
            return "more"
        if frame[:4] != RESULT_MAGIC or frame[4:20] != self.nonce:
            self.bad = "the program wrote to the result channel"
            return "bad"
        size = struct.unpack(">I", frame[20:24])[0]
        if size > MAX_RESULT:
            self.bad = "result too large"
            return "bad"
        if len(frame) < RESULT_HEADER + size:
            return "more"
        if len(frame) > RESULT_HEADER + size:
            self.bad = "the program wrote to the result channel"
            return "bad"
        self.payload = bytes(frame[RESULT_HEADER:])
        return "done"
