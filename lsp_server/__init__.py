"""egcfg's language server (pygls): guided inline completions, test-run diagnostics and trace hovers.

The protocol, including the custom notifications and commands, is described in docs/protocol.md."""
