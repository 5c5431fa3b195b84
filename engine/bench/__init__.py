"""Benchmarks: data-set loaders, `bench validate` (references through the executor), honest
accuracy scoring (optionally on Ray) and `bench speed`.
May import generation, execution, project and errors; never cli or lsp_server."""
