"""Code that runs INSIDE the sandbox: the fork server, the per-test child and the tracer.
Standard library only, and nothing outside this folder: the worker loads this folder as a package
of its own (see worker.py), so a module here may import its siblings relatively and nothing else."""
