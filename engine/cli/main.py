"""The ``egcfg`` command. Each sub-command lives in its own module, exposing
``add_arguments(parser)`` and ``main(args) -> int``; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from engine.errors import UserError

# (command path, module, one-line help). Modules are imported only when their command runs, so
# `egcfg trace` never pays for importing torch.
COMMANDS = [
    (("trace",), "engine.cli.trace", "run tests against a program in the sandbox and print the traces"),
    (("complete",), "engine.cli.complete", "complete a function with execution-guided decoding"),
    (("doctor",), "engine.cli.doctor", "show what this machine offers (GPU, 4-bit, sandbox, model cache)"),
    (("bench", "validate"), "engine.bench.validate", "run every reference solution of a data set through the executor"),
    (("bench", "speed"), "engine.bench.speed", "measure guided decoding speed against plain greedy and the naive loop"),
    (("bench", "replay"), "engine.bench.replay", "replay reference solutions through the agent loop: cost per line, paper vs fast"),
    (("bench", "accuracy"), "engine.bench.accuracy", "score the engine on MBPP / HumanEval (and their ET tests)"),
    (("dev", "tiny-model"), "engine.generation.tiny", "build a tiny random-weight model and tokenizer for tests"),
]


# Commands from other packages (the language server's `serve`) register through this entry-point
# group in their pyproject, so the engine never names them: `serve = "lsp_server.cli"`.
PLUGIN_GROUP = "egcfg.commands"


def plugin_commands() -> list[tuple[tuple[str, ...], str, str]]:
    from importlib.metadata import entry_points

    found = []
    for point in entry_points(group=PLUGIN_GROUP):
        module = point.value.split(":")[0]
        spec = importlib.util.find_spec(module.split(".")[0])
        if spec is None:  # the plugin's package is gone but its metadata stayed
            continue
        found.append((tuple(point.name.split()), module, ""))
    return found


def _help_of(module) -> str:
    return str(getattr(module, "HELP", "") or "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egcfg", description="Execution-guided code completion.")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="command", metavar="COMMAND")}
    for path, module, help_text in COMMANDS + plugin_commands():
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix not in groups:
                sub = groups[path[: depth - 1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = sub.add_subparsers(dest="_".join(prefix), metavar="COMMAND")
                sub.set_defaults(_usage=sub)
        loaded, broken = None, None
        try:
            loaded = importlib.import_module(module)
        except Exception as error:  # one broken command must not take the others down
            broken = f"{type(error).__name__}: {error}"
        help_text = help_text or _help_of(loaded)
        sub = groups[path[:-1]].add_parser(path[-1], help=help_text, description=help_text)
        sub.set_defaults(_module=module, _usage=sub)
        if loaded is not None:
            try:
                loaded.add_arguments(sub)
            except Exception as error:
                broken = f"{type(error).__name__}: {error}"
        if broken:
            sub.set_defaults(_broken=broken)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.cli.quiet import quiet_third_party

    quiet_third_party()
    parser = build_parser()
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        (getattr(args, "_usage", None) or parser).print_help(sys.stderr)
        return 2
    if getattr(args, "_broken", None):
        print(f"egcfg: this command cannot start ({module}: {args._broken})", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(module).main(args) or 0)
    except UserError as error:
        print(f"egcfg: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("egcfg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `egcfg ... | head`: the reader left; say nothing more
        sys.stdout = None
        return 0


if __name__ == "__main__":
    sys.exit(main())
