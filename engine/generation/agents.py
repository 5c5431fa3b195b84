"""Agents (METHOD.md "Agents and stopping"): the grid of (s, d, t, prompt style, gamma), running
several agents over one model, the first to pass all the task's tests wins.

Agents are generators that yield events, or `Wait(future)` while their candidates run in the
sandbox. One scheduler drives them round-robin on the calling thread: while one agent's
candidates execute on CPU, the next agent decodes. The order of all model work is fixed, so a
run is deterministic given its seed (the sandbox's wall-clock limits aside). Only the task's given
tests guide and stop the search; the answer says which agent wrote it.

    run_completion(model, executor, task, preset="editor") -> Iterator[Event]
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

from engine.generation import candidates, decode
from engine.generation import prompts
from engine.errors import UserError
from engine.generation.events import AgentFinished, CancelToken, CandidatesRun, CompletionTask, Event, Finished, LineCommitted


# ------------------------------------------------------------------------------------------------
# The grid

@dataclass(frozen=True)
class AgentConfig:
    s: int = 3                # candidates per line
    d: int = 3                # lines per candidate
    t: float = 0.7            # candidate temperature
    style: str = "instruct"   # prompt style (engine.generation.prompts.STYLES)
    gamma: float = 1.0        # guidance strength; 0 = plain greedy

    @property
    def name(self) -> str:
        if self.gamma == 0:
            return f"{self.style}/greedy"
        return f"{self.style}/g{self.gamma:g}/s{self.s}d{self.d}t{self.t:g}"


PAPER_TEMPERATURES = (0.7, 0.75, 0.85, 0.95, 1.2, 1.5)
PAPER_DEPTHS = (2, 3, 6, 8)
PAPER_GAMMAS = (0.0, 0.5, 1.0, 3.0)

PRESETS: dict[str, tuple[AgentConfig, ...]] = {
    # seconds on a GPU: greedy first (often right, and cheap), then two guided agents
    "editor": (
        AgentConfig(gamma=0.0),
        AgentConfig(s=3, d=3, t=0.7, gamma=1.0),
        AgentConfig(s=3, d=2, t=0.95, gamma=3.0),
    ),
    "baseline": (AgentConfig(gamma=0.0),),
    # the authors' grid: 6 temperatures x 4 depths x 2 styles x 4 gammas (greedy agents merged)
    "paper": tuple(AgentConfig(s=3, d=d, t=t, style=style, gamma=gamma)
                   for t in PAPER_TEMPERATURES for d in PAPER_DEPTHS for style in prompts.STYLES
                   for gamma in PAPER_GAMMAS),
}


def agent_grid(preset: str = "editor", gammas: Sequence[float] | None = None) -> list[AgentConfig]:
    """The preset's agents; `gammas` replaces the preset's gamma values. Greedy agents (gamma 0)
    do not depend on s, d or t, so one per prompt style is kept, ahead of the guided ones."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    configs = list(PRESETS[preset])
    if gammas is not None:
        gammas = [float(g) for g in gammas]
        if not gammas:
            raise UserError("the gammas override is empty: give at least one gamma")
        if any(g < 0 for g in gammas):
            raise UserError(f"gamma must be 0 or more, got {min(gammas)}")
        bases = list(dict.fromkeys(replace(c, gamma=1.0) for c in configs))
        configs = [replace(base, gamma=g) for base in bases for g in dict.fromkeys(gammas)]
    greedy = list(dict.fromkeys(AgentConfig(gamma=0.0, style=c.style) for c in configs if c.gamma == 0))
    guided = list(dict.fromkeys(c for c in configs if c.gamma != 0))
    return greedy + guided


# ------------------------------------------------------------------------------------------------
# Shared pieces of one run

_model_locks: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model):
    """One lock per model: concurrent runs (two editors, a benchmark) take turns on the GPU."""
    with _locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.RLock()   # re-entered by the batching scheduler
        return lock


@dataclass
class Wait:
    """Yielded by an agent while its sandbox work runs; the scheduler moves on to another agent."""
    future: Future


@dataclass
class Outcome:
    config: AgentConfig
    index: int
    body: str
    program: str
    passed: int
    total: int
    reason: str


@dataclass
class Run:
    """What every agent of one run_completion call shares."""
    model: Any                # LoadedModel
    executor: Any             # engine.execution.executor.Executor
    task: CompletionTask
    cancel: Any
    max_new_tokens: int
    seed: int
    signal_chars: int
    pool: ThreadPoolExecutor
    def_indent: int
    prompts: dict[str, prompts.Prompt] = field(default_factory=dict)
    heads: dict[str, decode.KV] = field(default_factory=dict)   # per prompt style: KV before i_dyn
    batch: bool = False       # live agents' steps go into one forward (the scheduler runs them)
    reuse: bool = False       # candidates whose first line was committed are kept for the next line
    force: list[int] | None = None                 # teacher forcing of the guided choice (replay)
    steer: candidates.Steer | None = None          # steering of candidate rows (replay)
    compile: bool = False     # one-token steps compiled: the scheduler's batched forward when batching
                              # (engine.generation.compiled_batch), else each guided step (.compiled)

    def steps(self, generator):
        """Run a step generator: alone on the model, or (batching) hand its steps to the scheduler."""
        if self.batch:
            return (yield from generator)
        import torch

        with self.gpu(), torch.inference_mode():
            return decode.run_steps(self.model.model, generator)

    def prompt(self, style: str) -> prompts.Prompt:
        if style not in self.prompts:
            task = self.task
            self.prompts[style] = prompts.build_prompt(
                self.model.tokenizer, source_before=task.source_before, tests=task.tests,
                instruction=task.instruction, style=style, function_name=task.function_name)
        return self.prompts[style]

    @contextmanager
    def gpu(self):
        with model_lock(self.model.model):
            yield

    def submit(self, function, *args) -> Future:
        return self.pool.submit(function, *args)

    def signal_room(self, prompt: prompts.Prompt) -> int:
        """Signal tokens that still fit the model's positions next to the prompt and the body."""
        limit = getattr(self.model.model.config, "max_position_embeddings", None) or 1 << 30
        return max(0, limit - len(prompt.ids) - self.max_new_tokens)

    def cancelled(self) -> bool:
        return bool(self.cancel is not None and self.cancel.cancelled)


def _job(run: Run, program: str, trace: bool):
    from engine.execution.executor import Job

    return Job(program=program, tests=tuple(run.task.tests), setup=run.task.setup, trace=trace, project=run.task.project)


def candidate_program(run: Run, code: str, candidate: candidates.Candidate) -> str | None:
    """source_before + code so far + candidate lines, repaired, + source_after; None if unrepairable."""
    from engine.execution.repair import make_executable

    repaired = make_executable(run.task.source_before + code + candidate.text)
    if repaired is None:
        return None
    if run.task.source_after and not repaired.endswith("\n"):
        repaired += "\n"
    return repaired + run.task.source_after


def build_signal(candidates: Sequence[str], programs: Sequence[str], results: Sequence[Any], budget: int) -> str:
    """The rendered traces the model reads (engine.generation.prompts adds the fixed header): per candidate,
    its code, then each test's invocation, outcome and trace, sharing one character budget."""
    from engine.execution.render import render_blocks

    if not candidates:
        return ""
    share = max(200, budget // len(candidates))
    parts = []
    for number, (text, program, result) in enumerate(zip(candidates, programs, results), 1):
        blocks = render_blocks([(program, test) for test in result.tests], budget=share)
        parts.append(f"# candidate {number}:\n```python\n{text.rstrip()}\n```\n{blocks}")
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------
# One agent

def run_agent(run: Run, config: AgentConfig, index: int):
    """Generator: decodes one function line by line, yields events, Wait(...) and, when the run
    batches agents, decode.Step requests; returns an Outcome."""
    task, tokenizer = run.task, run.model.tokenizer
    name = config.name
    prompt = run.prompt(config.style)
    gamma = config.gamma if task.tests else 0.0
    with run.gpu():
        if config.style not in run.heads:   # agents with the same prompt share the head's KV
            run.heads[config.style] = decode.prefill_head(run.model.model, prompt.ids, prompt.i_dyn)
        dec = decode.start(run.model.model, tokenizer, prompt.ids, prompt.i_dyn, gamma=gamma,
                           def_indent=run.def_indent, max_new_tokens=run.max_new_tokens, cancel=run.cancelled,
                           head=run.heads[config.style], compile=run.compile and not run.batch)
    if run.force is not None:
        dec.force = run.force
    seed = (run.seed + 7919 * index) % (2**62)
    pool = candidates.Pool()
    known: dict[str, Any] = {}   # program -> its JobResult, for rows kept from the previous line
    line_no, signal = 0, ""
    try:
        while True:
            draft: list[int] = []
            if gamma != 0:
                cap = candidate_token_cap(config, dec)
                if not run.reuse:
                    pool, known = candidates.Pool(made=pool.made), {}
                with run.gpu():
                    candidates.refill(dec, pool, config.s, seed, room=cap + 1)
                sampled = yield from run.steps(candidates.sample_steps(dec, pool, config.d, config.t, cap, run.steer))
                unique = _unique_programs(run, dec.code, sampled)
                started = time.monotonic()
                programs = [p for _, p in unique]
                todo = [p for p in dict.fromkeys(programs) if p not in known]
                if todo:
                    future = run.submit(run.executor.map, [_job(run, program, True) for program in todo])
                    yield Wait(future)
                    known.update(zip(todo, future.result()))
                results = [known[p] for p in programs]
                texts = [c.text for c, _ in unique]
                yield CandidatesRun(name, line_no + 1, texts, results, programs, len(sampled),
                                    time.monotonic() - started, [task.tests_passed(r) for r in results])
                for (candidate, program), result in zip(unique, results):
                    if candidate.complete and result.all_passed and program.startswith(task.source_before):
                        # a sampled candidate already finishes the function and passes: take it
                        body = _body_of(task, program).rstrip() + "\n"
                        program = task.program(body)
                        written = body[len(dec.code):] if body.startswith(dec.code) else ""
                        for text in written.splitlines():
                            line_no += 1
                            code = body[: _line_end(body, line_no)] if body.count("\n") >= line_no else body
                            yield LineCommitted(name, line_no, text, task.program(code), "", code)
                        return Outcome(config, index, body, program, *task.tests_passed(result), "complete")
                rendered = build_signal(texts, programs, results, run.signal_chars)
                signal = prompts.signal_text(rendered) if rendered.strip() else ""
                draft = candidates.choose_draft([c for c, _ in unique])
                with run.gpu():
                    decode.set_signal(dec, prompts.signal_ids(tokenizer, rendered)[: run.signal_room(prompt)])
            before = len(dec.ids)
            end = yield from run.steps(decode.guided_line_steps(dec, draft))
            if run.reuse:
                candidates.advance(pool, dec.ids[before:])
            for text in end.lines:
                line_no += 1
                code = dec.text[: _line_end(dec.text, line_no)]
                yield LineCommitted(name, line_no, text, task.program(code), signal, code)
            if end.stop:
                body = dec.code if end.why != "eos" else dec.text
                reason = "token_cap" if end.stop == "token_cap" else "complete"
                break
    except decode.Cancelled:
        body, reason = dec.code, "cancelled"
    return (yield from _finish(run, config, index, body, reason))


def candidate_token_cap(config: AgentConfig, dec: decode.Decoding) -> int:
    """Tokens a candidate row may take: about 40 per line, never far past the agent's own budget."""
    return max(8, min(40 * config.d + 24, dec.max_new_tokens - len(dec.ids) + 16))


def _line_end(text: str, lines: int) -> int:
    """Index just past the `lines`-th newline of `text`."""
    position = -1
    for _ in range(lines):
        position = text.index("\n", position + 1)
    return position + 1


def _unique_programs(run: Run, code: str, sampled: Sequence[candidates.Candidate]):
    """(candidate, program) for the executable candidates, one per normalised program."""
    from engine.execution.repair import normalise

    seen, unique = set(), []
    for candidate in sampled:
        program = candidate_program(run, code, candidate)
        if program is None:
            continue
        key = normalise(program) or program
        if key not in seen:
            seen.add(key)
            unique.append((candidate, program))
    return unique


def _body_of(task: CompletionTask, program: str) -> str:
    body = program[len(task.source_before):]
    if task.source_after and body.endswith(task.source_after):
        body = body[: len(body) - len(task.source_after)]
    return body


def _finish(run: Run, config: AgentConfig, index: int, body: str, reason: str):
    """Run the agent's program against the tests (no traces) and return its Outcome."""
    body = body.rstrip() + "\n" if body.strip() else ""
    program = run.task.program(body)
    passed, total = 0, run.task.test_count
    if run.task.tests and reason != "cancelled":
        future = run.submit(run.executor.run, _job(run, program, False))
        yield Wait(future)
        result = future.result()
        passed, total = run.task.tests_passed(result)
    return Outcome(config, index, body, program, passed, total, reason)


# ------------------------------------------------------------------------------------------------
# The scheduler

@dataclass
class _Live:
    config: AgentConfig
    index: int
    steps: Any
    future: Future | None = None
    reply: Any = None         # the logits of its last Step (batched scheduling)


def _wait(future: Future, run: Run) -> None:
    """Wait for sandbox work, checking the cancel token every 50 ms."""
    while not future.done():
        if run.cancelled():
            return
        wait_futures([future], timeout=0.05)


def run_completion(model, executor, task: CompletionTask, *, preset: str = "editor",
                   gammas: Sequence[float] | None = None, cancel: CancelToken | None = None,
                   max_new_tokens: int = 512, seed: int | None = None, concurrency: int | None = None,
                   signal_chars: int = 6000, fast: bool = True, first_pass_wins: bool = True,
                   teacher: Any = None, batch_agents: bool | None = None,
                   compile: bool = False) -> Iterator[Event]:
    """Complete `task.function_name` with execution-guided decoding; yields events as they happen.

    model       engine.generation.models.LoadedModel (its .model and .tokenizer are used)
    executor    engine.execution.executor.Executor (runs candidates x tests in the sandbox, with traces)
    task        CompletionTask: the code before/after the body, an instruction, the given tests
    preset      "editor" (3 agents: greedy, then two guided), "baseline" (greedy only) or "paper"
                (the authors' grid); `gammas` replaces the preset's gamma values
    cancel      anything with a `.cancelled` property (engine.generation.events.CancelToken): checked before
                every forward pass and while waiting for the sandbox
    max_new_tokens   token cap per agent for the body
    seed        sampling seed (default: torch.initial_seed(), so torch.manual_seed(...) applies)
    concurrency agents alive at once (default: 2 round-robin, every agent of the preset up to 4 when fast)
    fast        True: the live agents' steps share one forward and candidates whose first line was
                committed are kept for the next line (what is computed is the same method: kept rows
                are samples of the same distribution); False: the paper's scheme, fresh candidates
                every line and one agent per forward (round-robin)
    first_pass_wins  stop at the first agent whose program passes every given test (False: every
                agent runs to its end, for benchmarks)
    batch_agents     override `fast` for the batching alone (tests: batched against one by one)
    compile     one-token steps through torch.compile'd functions (CUDA graphs on a GPU): when agents
                are batched, the shared batched forward (every agent's guided and candidate steps);
                otherwise each guided step; bitsandbytes 4-bit compiles only on a GPU (0.50+)
    teacher     for `egcfg bench replay`: an object with `.force` (token ids the guided choice follows)
                and `.steer` (engine.generation.candidates.Steer for the candidate rows)

    Events: CandidatesRun and LineCommitted while agents work, AgentFinished per agent that ends,
    and always a last Finished: the first program that passes every given test (solved=True, the
    other agents stop), else the program that passes the most (solved=False, and the status says
    so). Only `task.tests` are ever run. Without tests guidance is off (plain greedy decoding).
    Bad input raises engine.errors.UserError.
    """
    import torch

    started = time.monotonic()
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    configs = agent_grid(preset, gammas)
    if concurrency is None:
        concurrency = max(1, min(len(configs), 4)) if fast else 2
    if concurrency < 1:
        raise UserError(f"concurrency must be at least 1, got {concurrency}")
    tests = [t for t in task.tests if t.strip()]
    if not tests:
        configs = [c for c in configs if c.gamma == 0] or [AgentConfig(gamma=0.0, style=configs[0].style)]
        configs = configs[:1]
    task = replace(task, tests=tests)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="egcfg-sandbox")
    run = Run(model=model, executor=executor, task=task, cancel=cancel, max_new_tokens=max_new_tokens,
              seed=torch.initial_seed() if seed is None else int(seed), signal_chars=signal_chars, pool=pool,
              def_indent=decode.def_indent_of(task.source_before, task.function_name),
              batch=fast if batch_agents is None else batch_agents, reuse=fast,
              force=getattr(teacher, "force", None), steer=getattr(teacher, "steer", None), compile=compile)
    batch_agents = run.batch
    limit = getattr(model.model.config, "max_position_embeddings", None)
    for config in configs:
        prompt = run.prompt(config.style)   # bad input fails here, before any agent starts
        if limit and len(prompt.ids) + max_new_tokens > limit:
            raise UserError(f"the prompt is {len(prompt.ids)} tokens and with {max_new_tokens} new tokens it does "
                            f"not fit the model's {limit} positions: shorten the code before the function")
    outcomes: list[Outcome] = []
    schedule = _batched if batch_agents else _round_robin
    agents = schedule(run, configs, concurrency)
    try:
        for item in agents:
            if isinstance(item, Outcome):
                outcomes.append(item)
                if first_pass_wins and _passes(item):
                    break
                continue
            yield item
        winner = next((outcome for outcome in outcomes if _passes(outcome)), None)
        yield _finished(run, outcomes, winner, time.monotonic() - started, bool(tests))
    finally:
        agents.close()
        pool.shutdown(wait=False, cancel_futures=True)


def _passes(outcome: Outcome) -> bool:
    return bool(outcome.total and outcome.passed == outcome.total and outcome.reason not in ("cancelled", "error"))


def _settle(run: Run, agent: "_Live", error: BaseException) -> Iterator:
    """The events for an agent that ended: its Outcome (for the caller) and AgentFinished."""
    tests = run.task.tests
    if isinstance(error, StopIteration):
        outcome: Outcome = error.value
        yield _agent_finished(outcome, run.max_new_tokens)
        yield outcome
        return
    if isinstance(error, UserError):
        raise error
    # one agent failing (e.g. out of memory) does not end the run
    yield AgentFinished(agent.config.name, run.task.program(""), 0, len(tests), "error",
                        message=f"{type(error).__name__}: {error}")
    yield Outcome(agent.config, agent.index, "", run.task.program(""), 0, len(tests), "error")


def _round_robin(run: Run, configs: Sequence[AgentConfig], concurrency: int) -> Iterator:
    """One agent at a time on the model: it decodes until it waits for the sandbox, then the next
    live agent takes over. Yields events and each finished agent's Outcome."""
    waiting = deque(enumerate(configs))
    live: deque[_Live] = deque()
    try:
        while (waiting or live) and not run.cancelled():
            while waiting and len(live) < concurrency:
                index, config = waiting.popleft()
                live.append(_Live(config, index, run_agent(run, config, index)))
            agent = live.popleft()
            if agent.future is not None:
                _wait(agent.future, run)
                if run.cancelled() and not agent.future.done():
                    live.appendleft(agent)
                    break
                agent.future = None
            try:
                while True:
                    item = next(agent.steps)
                    if isinstance(item, Wait):
                        agent.future = item.future
                        live.append(agent)
                        break
                    yield item
            except Exception as error:
                yield from _settle(run, agent, error)
    finally:
        for agent in live:
            agent.steps.close()


def _batched(run: Run, configs: Sequence[AgentConfig], concurrency: int) -> Iterator:
    """Every live agent advances to its next one-token step; all those steps run as one forward
    (engine.generation.batching), and each agent gets its rows' logits back. Agents waiting for
    the sandbox sit the forward out; the others go on. Yields events and Outcomes."""
    import torch

    from engine.generation.batching import forward_steps

    if run.compile:   # the scheduler's forward compiled (the agents' own steps stay as they are)
        from engine.generation import compiled, compiled_batch

        if compiled.compilable(run.model.model)[0]:
            forward_steps = compiled_batch.forward_steps
    waiting = deque(enumerate(configs))
    live: list[_Live] = []
    try:
        while waiting or live:
            if run.cancelled():   # agents on the model see the token at their next step and end
                waiting.clear()
                for agent in [agent for agent in live if agent.future is not None and not agent.future.done()]:
                    live.remove(agent)
                    agent.steps.close()
            while waiting and len(live) < concurrency:
                index, config = waiting.popleft()
                live.append(_Live(config, index, run_agent(run, config, index)))
            ready, events = [], []
            for agent in list(live):
                if agent.future is not None:
                    if not agent.future.done():
                        continue
                    agent.future = None
                try:
                    with run.gpu(), torch.inference_mode():
                        item = agent.steps.send(agent.reply)
                        agent.reply = None
                        while not isinstance(item, (decode.Step, Wait)):
                            events.append(item)
                            item = next(agent.steps)
                except Exception as error:
                    live.remove(agent)
                    events.extend(_settle(run, agent, error))
                    continue
                if isinstance(item, Wait):
                    agent.future = item.future
                else:
                    ready.append((agent, item))
            yield from events
            if ready:
                with run.gpu(), torch.inference_mode():
                    replies = forward_steps(run.model.model, [step for _, step in ready])
                for (agent, _), reply in zip(ready, replies):
                    agent.reply = reply
            elif live and not events:
                futures = [agent.future for agent in live if agent.future is not None]
                if futures:
                    wait_futures(futures, timeout=0.05, return_when=FIRST_COMPLETED)
    finally:
        for agent in live:
            agent.steps.close()


def _agent_finished(outcome: Outcome, token_cap: int) -> AgentFinished:
    messages = {
        "complete": f"the function is complete and passes {outcome.passed}/{outcome.total} tests",
        "token_cap": f"stopped at the {token_cap}-token cap before the function ended",
        "cancelled": "cancelled",
    }
    return AgentFinished(outcome.config.name, outcome.program, outcome.passed, outcome.total, outcome.reason,
                         body=outcome.body, message=messages.get(outcome.reason, outcome.reason))


def _finished(run: Run, outcomes: list[Outcome], winner: Outcome | None, seconds: float, guided: bool) -> Finished:
    total = run.task.test_count
    if winner is not None:
        return Finished(winner.program, winner.passed, winner.total, winner.config.name, True, seconds,
                        f"solved: agent {winner.config.name} wrote a program that passes all {total} given tests",
                        body=winner.body)
    finished = [o for o in outcomes if o.reason != "error"]
    cancelled = run.cancelled()
    if not finished:
        status = "cancelled before any agent finished" if cancelled else "every agent failed with an error"
        return Finished(run.task.program(""), 0, total, "", False, seconds, status)
    best = max(finished, key=lambda o: (o.passed, o.reason == "complete", -o.index))
    if not guided:
        status = "no tests were given, so guidance is off: plain greedy decoding"
    else:
        status = (f"no agent passed all {total} given tests; returning the best program "
                  f"(agent {best.config.name}, {best.passed}/{total} pass)")
    if best.reason == "token_cap":
        status += f"; it stopped at the {run.max_new_tokens}-token cap before the function ended"
    if cancelled:
        status = "cancelled; " + status
    return Finished(best.program, best.passed, best.total, best.config.name, False, seconds, status, body=best.body)
