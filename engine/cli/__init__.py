"""The `egcfg` command: main.py wires the sub-commands (each a module with add_arguments/main);
complete, trace and doctor live here. May import any part of the engine, never lsp_server
(`egcfg serve` names lsp_server.cli by string and imports it only when that command runs)."""
