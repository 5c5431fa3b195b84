"""The sealed runner: T's steps (the program, its setup, the test or each of its leaves) and the
report of each step, written so that candidate code cannot change what is reported.

Runs inside the sandbox (stdlib only; CPython 3.9-3.13). What it holds to, each rule against an
attack that forged a pass before it:
- No function here reads a global, a builtin or a closure. Every tool is a constant of its code
  (``build`` injects them with ``code.replace(co_consts=...)`` once per worker), and each call
  makes a fresh function from the code object: rebinding a module attribute, a builtin, a
  function's ``__code__`` or a dict found through ``gc`` changes nothing here.
- A local that was alive while candidate code ran is never read again: since Python 3.13 a
  frame's ``f_locals`` writes through (PEP 667), and on 3.11/3.12 a trace function's changes to
  it are written back. What a step produced reaches its report on the evaluation stack, and what
  the report needs was pushed before the step ran.
- Between steps the runner is guarded (``_on``): the trace function and every sys.monitoring
  callback are cleared, a profile function that lets only this runner's and the encoder's code
  run is installed, the collector and thread switches are held off. Any other Python code that
  runs then (a signal handler, ``__del__``, a metaclass's ``__hash__``, ...) trips the guard,
  which overwrites the nonce in the header page: M rejects every later record of the test.
  ``_off`` gives the candidate its hooks back before its next step.
- Each step's record is final as soon as it is known: marshalled and copied, with its header taken
  from the header page in C (the nonce is never a Python object here), into the buffer after that
  page, which goes to M in one write at the end; M checks that the records come in order.
What remains (a thread of the candidate's that gets one more time slice while a report is
written, hooks of two kinds re-arming each other while the guard goes on, ctypes) is in
docs/architecture.md.
"""

from __future__ import annotations

import _signal
import ctypes
import functools
import gc
import marshal
import operator
import struct
import sys

from . import channel
from .pristine import exit_now

STEP_LIMIT = 10_000    # the runner's recursion limit while it encodes (T gives the candidate 1000)
NO_SWITCH = 1_000_000.0  # seconds: no thread switch while a report is written


def _run(steps, holder, tracer, streams):
    """T's run: each step and its report, then the end; never returns. Entered once, before any
    candidate code; it turns the guard on after each piece of candidate code (``_on``), and what
    it reads afterwards was either pushed before that code ran or made with the guard on."""
    for step in steps:
        request = "@fn@"("@report@", "@g@")(step, holder, ("@fn@"("@piece@", "@g@")(step, holder),
                                                             "@fn@"("@on@", "@g@")(holder))[0])
        if request[0] == "help":  # str of an exception, truth or items of a value: the candidate's code
            request = "@fn@"("@finish@", "@g@")(request, holder, ("@fn@"("@help@", "@g@")(request, holder),
                                                                  "@fn@"("@on@", "@g@")(holder))[0])
        if request[1]:
            break
    trace = None
    if tracer is not None:  # the tracer's own code runs unguarded (a trace is no verdict)
        trace = ("@fn@"("@trace_result@", "@g@")((tracer, "@fn@"("@off@", "@g@")(holder))[0]),
                 "@fn@"("@on@", "@g@")(holder))[0]
    "@fn@"("@end@", "@g@")(streams, trace)


def _piece(step, holder):
    """One step of candidate code (entered guarded). ``step`` is read before the candidate's hooks
    come back (``_off``); the outcome leaves on the stack, and ``_run`` turns the guard on."""
    kind = step[1]
    try:
        if kind == "leaf":
            return ("value", "@eval@"(step[2], (holder[0], "@fn@"("@off@", "@g@")(holder))[0]))
        if kind == "load":
            return ("value", "@load@"((step[2], "@fn@"("@off@", "@g@")(holder))[0]))
        return ("value", "@exec@"(step[2], (holder[0], "@fn@"("@off@", "@g@")(holder))[0]))
    except:  # noqa: E722 - whatever the step raised is its outcome (a bare except looks up no name)
        return ("raised", "@exc_info@"()[1])


def _help(request, holder):
    """The candidate's code that Python itself would run for the report (entered guarded)."""
    try:
        return request[1]((request[2], "@fn@"("@off@", "@g@")(holder))[0])
    except:  # noqa: E722 - a __str__, __bool__ or __iter__ that raises
        return "@failed@"


def _on(holder):
    """Guard on (entered unguarded): the candidate's hooks saved for ``_off``, then cleared, and the
    guard installed; if it is not in place afterwards, the header's nonce is spoiled.

    Signals first: a Python signal handler that ran inside the guard (a profile function: no
    profile events there, and its frame's locals are written back after it) could rewrite the
    report's locals. They stay blocked in the kernel while guarded; with other threads about (a
    signal can reach them), the candidate's Python handlers are swapped for SIG_IGN as well."""
    mask = "@sigmask@"("@sig_block@", "@all_signals@")
    handlers = None
    if "@len@"("@current_frames@"()) > 1:
        handlers = "@tuple@"("@map@"("@getsignal@", "@all_signals@"))
        for number, handler in "@zip@"("@all_signals@", handlers):
            if "@callable@"(handler) and handler is not "@our_handlers@"[0] and handler is not "@our_handlers@"[1]:
                "@signal@"(number, "@sig_ign@")
    "@fn@"("@noop@", "@g@")()  # its entry runs the Python handlers of signals that arrived before the block
    saved = ("@gettrace@"(), "@getprofile@"(), "@tuple@"("@map@"("@register@", "@tools@", "@events@", "@nones@")),
             "@getswitch@"(), "@gcenabled@"(), "@getrecursion@"(), mask, handlers)
    "@settrace@"(None)
    "@setprofile@"("@fn@"("@guard@", "@g@"))
    "@settrace@"(None)
    "@tuple@"("@map@"("@register@", "@tools@", "@events@", "@nones@"))
    "@setswitch@"("@no_switch@")
    "@gcdisable@"()
    "@setrecursion@"("@step_limit@")
    if "@gettrace@"() is not None or "@type@"("@getprofile@"()) is not "@function@" \
            or "@getprofile@"().__code__ is not "@guard@":
        "@trip@"()
    holder[1] = saved
    return None


def _off(holder):
    """Guard off: the candidate's hooks back (the profile function last: the guard goes with it)."""
    saved = holder[1]
    if saved is None:  # the first step: nothing was taken away yet
        return None
    if saved[4]:
        "@gcenable@"()
    try:
        "@setrecursion@"(saved[5])
    except:  # noqa: E722 - a limit below the current depth
        pass
    "@setswitch@"(saved[3])
    "@tuple@"("@map@"("@register@", "@tools@", "@events@", saved[2]))
    "@settrace@"(saved[0])
    "@setprofile@"(saved[1])
    if saved[7] is not None:
        for number, handler in "@zip@"("@all_signals@", saved[7]):
            if "@callable@"(handler) and handler is not "@our_handlers@"[0] and handler is not "@our_handlers@"[1]:
                "@signal@"(number, handler)
    "@sigmask@"("@sig_setmask@", saved[6])
    holder[2].clear()  # what the reports held: its finalizers (a generator's close) may run now
    return None


def _noop():
    return None


def _guard(frame, event, arg):
    """The profile function while guarded: Python code other than the runner's trips it."""
    if event == "call" and "@id@"(frame.f_code) not in "@allowed@":
        "@trip@"()
        raise "@interference@"


def _report(step, holder, outcome):
    """Guarded: the step's record from its outcome, or ("help", what to call, value, step, mode)
    when the report needs the candidate's code (``_run`` calls it unguarded, then ``_finish``)."""
    holder[2].append(outcome)  # freed (finalizers run) only once the guard is off again: see _off
    kind = step[1]
    if outcome[0] == "raised":
        return ("help", "@str@", outcome[1], step, "raised")
    if kind == "load":
        holder[0] = outcome[1]
    if kind == "exec" or kind == "load":  # the test sees the interpreter's builtins, not patched ones
        "@setitem@"(holder[0], "__builtins__", "@dict@"("@builtins_items@"))
    if kind != "leaf":
        return ("sent", "@fn@"("@send_step@", "@g@")(step[0], kind, None, False))
    leaf = "@fn@"("@encoder@", "@g@")()["encode_value"](outcome[1])
    if leaf[0] == "value" or not (step[3] or step[4]):
        return ("sent", "@fn@"("@send_step@", "@g@")(step[0], kind, "@dumps@"(leaf), False))
    if step[4]:  # only its truth is tested: a candidate could have returned True just as well
        return ("help", "@bool@", outcome[1], step, "truth")
    return ("help", "@list@", outcome[1], step, "items")  # the skeleton iterates it


def _finish(request, holder, helped):
    """Guarded: the record of a step whose report needed the candidate's code (``helped``)."""
    holder[2].append(helped)
    step, value, mode = request[3], request[2], request[4]
    if mode == "raised":
        message = helped if "@type@"(helped) is "@str_type@" else "<unprintable message>"
        described = "@fn@"("@encoder@", "@g@")()["describe"](value, message)
        interrupted = "@type@"(value) is "@time_limit@"
        body = "@dumps@"(("raise", described)) if step[1] == "leaf" else described
        return ("sent", "@fn@"("@send_step@", "@g@")(step[0], step[1], body, interrupted))
    if mode == "truth":
        leaf = ("value", ("b", helped)) if helped is True or helped is False \
            else ("refused", "its truth value could not be taken")
    elif "@type@"(helped) is "@list_type@":
        leaf = "@fn@"("@encoder@", "@g@")()["encode_items"](helped)
    else:
        leaf = ("refused", "raised while it was iterated")
    return ("sent", "@fn@"("@send_step@", "@g@")(step[0], "leaf", "@dumps@"(leaf), False))


def _send_step(position, kind, body, interrupted):
    """One step's record to M; True when the run stops here."""
    "@fn@"("@send@", "@g@")("@dumps@"(("step", position, kind, body, interrupted)))
    return interrupted or kind == "block" or (kind != "leaf" and body is not None)


def _send(payload):
    """The record into the buffer after the header page (its header copied from the page: the nonce
    never becomes a Python object); flushed at the end, or first when it would not fit."""
    size = "@len@"(payload)
    fill = "@from_bytes@"("@string_at@"("@fill_at@", 8), "little")
    if fill + "@header_size@" + size > "@records_bytes@":
        if not "@fn@"("@flush@", "@g@")(fill):
            return False
        fill = 0
    if "@header_size@" + size > "@records_bytes@":  # larger than the buffer: header and payload go straight out
        "@memmove@"("@length_at@", "@pack@"(">I", size), 4)
        return "@fn@"("@write_out@", "@g@")("@header_at@", "@header_size@") \
            and "@fn@"("@write_out@", "@g@")(payload, size)
    at = "@records_at@" + fill
    "@memmove@"(at, "@header_at@", 20)
    "@memmove@"(at + 20, "@pack@"(">I", size), 4)
    "@memmove@"(at + 24, payload, size)
    "@memmove@"("@fill_at@", "@pack@"("<Q", fill + "@header_size@" + size), 8)
    return True


def _flush(fill):
    """The buffered records to fd 3 in one write."""
    "@memmove@"("@fill_at@", "@pack@"("<Q", 0), 8)
    return "@fn@"("@write_out@", "@g@")("@records_at@", fill)


def _write_out(data, size):
    """``size`` bytes from an address (int) or a bytes object to fd 3; the GIL stays held."""
    done = 0
    while done < size:
        if "@type@"(data) is "@int_type@":
            wrote = "@write@"("@result_fd@", data + done, size - done)
        else:
            wrote = "@write@"("@result_fd@", data[done:] if done else data, size - done)
        if wrote <= 0:
            return False
        done += wrote
    return True


def _encoder():
    """encode.py's functions, fresh, in a fresh dict, from their sealed code objects."""
    fresh = "@dict@"("@constants@")
    fresh["__builtins__"] = "@dict@"("@encoder_builtins@")
    fresh["_EXACT"] = "@dict@"("@exact@")
    fresh["Refused"] = "@type@"("Refused", ("@exception@",), {})
    for name, code in "@codes@":
        fresh[name] = "@function@"(code, fresh)
    return fresh


def _end(streams, trace):
    """Guarded: the candidate's output flushed, the "end" record, exit."""
    for stream in streams:
        try:
            stream.flush()
        except:  # noqa: E722 - the candidate may have closed it
            pass
    try:
        payload = "@dumps@"(("end", trace))
    except:  # noqa: E722 - an odd trace: the verdict goes without it
        payload = "@dumps@"(("end", None))
    "@fn@"("@send@", "@g@")(payload)
    "@fn@"("@flush@", "@g@")("@from_bytes@"("@string_at@"("@fill_at@", 8), "little"))
    "@exit@"(0)


def _trace_result(tracer):
    try:
        tracer.__exit__(None, None, None)
        return tracer.result()
    except:  # noqa: E722 - a broken trace is no verdict
        return None


def send_compile_error(described: tuple) -> None:
    """Before any candidate code ran: the program or test does not compile."""
    channel.send_record(marshal.dumps(("step", 0, "exec", described, False)))


TEMPLATES = {"noop": _noop, "write_out": _write_out, "flush": _flush, "send": _send, "send_step": _send_step,
             "encoder": _encoder, "off": _off, "piece": _piece, "help": _help, "report": _report, "finish": _finish,
             "end": _end, "guard": _guard, "on": _on, "trace_result": _trace_result,
             "run": _run}  # in the order they are built (each uses earlier ones)
# Entered while the guard is on; none of them refers to the guard's code (it refers to them).
GUARDED = ("write_out", "flush", "send", "send_step", "encoder", "off", "piece", "help", "report", "finish", "end")
# Standard-library modules whose Python code the encoder may run (pathlib's __str__).
ENCODER_STDLIB = ("pathlib", "pathlib._local", "pathlib._abc", "posixpath", "ntpath", "genericpath")


def _monitoring_clears():
    """(tool ids, events, Nones): every sys.monitoring callback slot (none before Python 3.12)."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return (), (), ()
    events = tuple(getattr(monitoring.events, name) for name in dir(monitoring.events)
                   if name.isupper() and name != "NO_EVENTS")
    tools = tuple(tool for tool in range(6) for _ in events)
    return tools, events * 6, (None,) * len(tools)


_KEPT: list = []


def _codes_within(code, found: dict) -> None:
    """``code`` and the code objects among its constants, by id (some hold unhashable constants)."""
    if id(code) in found:
        return
    found[id(code)] = code
    for constant in code.co_consts:
        if type(constant) is type(code):
            _codes_within(constant, found)


def _stdlib_codes(found: dict) -> None:
    for name in ENCODER_STDLIB:
        module = sys.modules.get(name)
        if module is None:
            continue
        for value in list(vars(module).values()):
            classes = [value] if isinstance(value, type) else []
            for cls in classes:
                for base in cls.__mro__:
                    for attribute in list(vars(base).values()):
                        _collect_callable(attribute, found)
            _collect_callable(value, found)


def _collect_callable(value, found: dict) -> None:
    for candidate in (value, getattr(value, "__func__", None), getattr(value, "fget", None)):
        code = getattr(candidate, "__code__", None) if candidate is not None else None
        if type(code) is type(_run.__code__):
            _codes_within(code, found)


def build(parts: tuple, builtins_items: tuple, time_limit, extra_allowed=(), our_handlers=(None, None)):
    """Once per worker, before any candidate code: the templates with their tools as constants;
    returns the run function's code (call it through ``runner``)."""
    codes, constants, exact, encoder_builtins = parts
    header = channel.header_address()
    tools, events, nones = _monitoring_clears()
    function_type = type(_run)
    values = {
        "@g@": {"__builtins__": {}}, "@fn@": function_type, "@function@": function_type, "@eval@": eval,
        "@exec@": exec, "@load@": operator.methodcaller("load"), "@exc_info@": sys.exc_info,
        "@gettrace@": sys.gettrace, "@getprofile@": sys.getprofile, "@settrace@": sys.settrace,
        "@setprofile@": sys.setprofile, "@tuple@": tuple, "@map@": map,
        "@register@": getattr(getattr(sys, "monitoring", None), "register_callback", max),
        "@tools@": tools, "@events@": events, "@nones@": nones, "@getswitch@": sys.getswitchinterval,
        "@setswitch@": sys.setswitchinterval, "@no_switch@": NO_SWITCH, "@gcenabled@": gc.isenabled,
        "@gcdisable@": gc.disable, "@gcenable@": gc.enable, "@getrecursion@": sys.getrecursionlimit,
        "@setrecursion@": sys.setrecursionlimit, "@step_limit@": STEP_LIMIT, "@type@": type,
        "@trip@": functools.partial(channel.memset, header + 4, 0xA5, 16),
        "@interference@": SystemError("the program ran code while its result was being reported"),
        "@setitem@": dict.__setitem__, "@dict@": dict, "@builtins_items@": builtins_items,
        "@dumps@": marshal.dumps, "@str@": str, "@str_type@": str, "@bool@": bool, "@list@": list,
        "@list_type@": list, "@failed@": object(), "@time_limit@": time_limit, "@len@": len,
        "@memmove@": channel.memmove, "@length_at@": header + 20, "@pack@": struct.pack,
        "@header_size@": channel.RESULT_HEADER, "@write@": channel.raw_write, "@result_fd@": channel.RESULT_FD,
        "@header_at@": header, "@fill_at@": header + channel.PAGE, "@records_at@": header + channel.PAGE + 8,
        "@records_bytes@": channel.RECORDS_BYTES - 8, "@from_bytes@": int.from_bytes, "@int_type@": int,
        "@string_at@": ctypes._string_at,  # the C function (string_at is Python code)
        "@constants@": constants, "@encoder_builtins@": encoder_builtins,
        "@exact@": exact, "@exception@": Exception, "@codes@": codes, "@exit@": exit_now, "@id@": id,
        # _signal's own functions: the signal module's wrappers turn every number into an enum (70 us a call)
        "@sigmask@": _signal.pthread_sigmask, "@sig_block@": _signal.SIG_BLOCK, "@sig_setmask@": _signal.SIG_SETMASK,
        "@all_signals@": tuple(sorted(_signal.valid_signals())), "@current_frames@": sys._current_frames,
        "@getsignal@": _signal.getsignal, "@signal@": _signal.signal, "@sig_ign@": _signal.SIG_IGN, "@zip@": zip,
        "@callable@": callable, "@our_handlers@": tuple(our_handlers),
    }
    keep = []  # every code object made here stays alive (the guard knows them by id)
    allowed: dict = {}
    for name, code in codes:
        _codes_within(code, allowed)
    for code in extra_allowed:
        _codes_within(code, allowed)
    _stdlib_codes(allowed)
    for name, template in TEMPLATES.items():
        if name == "guard":  # ids: our codes live as long as the worker, and some are unhashable
            values["@allowed@"] = frozenset(allowed)
        code = template.__code__
        values["@" + name + "@"] = code = code.replace(co_consts=_resolved(code.co_consts, values))
        keep.append(code)
        if name in GUARDED:
            allowed[id(code)] = code
    _KEPT.append((keep, allowed))
    return values["@run@"]


def _resolved(constants: tuple, values: dict) -> tuple:
    """The constants with each "@name@" placeholder replaced, also inside folded tuples."""
    out = []
    for constant in constants:
        if type(constant) is str and len(constant) > 2 and constant[0] == "@" == constant[-1]:
            constant = values[constant]
        elif type(constant) is tuple:
            constant = _resolved(constant, values)
        out.append(constant)
    return tuple(out)


def runner(code):
    """A fresh function from the run's code (its globals are never read)."""
    return type(_run)(code, {"__builtins__": {}})
