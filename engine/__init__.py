"""egcfg engine: execution-guided code generation (EG-CFG) without any editor protocol."""

__version__ = "0.1.0"
