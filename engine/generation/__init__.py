"""Generating code: model loading, prompts, the guided decode loop (gpt-fast style functions),
agents and the streaming events they emit, tiny random-weight models for tests.
May import engine.execution, engine.project and engine.errors; never bench, cli or lsp_server."""
