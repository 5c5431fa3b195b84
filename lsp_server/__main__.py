"""`python -m lsp_server [--tcp PORT]`: the same as `egcfg serve`."""

import argparse
import sys

from lsp_server import cli

parser = argparse.ArgumentParser(prog="python -m lsp_server", description="the egcfg language server")
cli.add_arguments(parser)
sys.exit(cli.main(parser.parse_args()))
