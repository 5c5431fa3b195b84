"""Originals the runner relies on, captured when the worker starts, before any candidate code runs.

The runner must not depend on anything the candidate can patch (module attributes, builtins):
candidate code runs only in forked copies of the worker, where these names still point at the
objects captured here."""

from __future__ import annotations

import builtins
import marshal
import os
import sys
import time

PRISTINE_BUILTINS = dict(builtins.__dict__)
write, exit_now = os.write, os._exit
dumps, loads = marshal.dumps, marshal.loads
monotonic = time.monotonic
ModuleType = type(sys)
exact_type = type
type_name = type.__dict__["__name__"].__get__
type_mro = type.__dict__["__mro__"].__get__
type_dict = type.__dict__["__dict__"].__get__
exc_traceback = BaseException.__dict__["__traceback__"].__get__
setrecursionlimit = sys.setrecursionlimit
settrace = sys.settrace
is_instance, length, to_str, to_list = isinstance, len, str, list
