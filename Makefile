.PHONY: dist vsix e2e e2e-setup

# The egcfg sdist and wheel: dist/
dist:
	scripts/setup
	.venv/bin/python -m build --outdir dist .

# The VS Code extension, packaged with the egcfg wheel inside (its "Set up EG-CFG" installs it):
# vscode-client/dist/egcfg.vsix
vsix:
	scripts/setup
	rm -rf vscode-client/wheels
	.venv/bin/python -m pip wheel --no-deps --quiet --wheel-dir vscode-client/wheels .
	cd vscode-client && npm ci --no-audit --no-fund && npm test && npm run package
	.venv/bin/python -c "import sys, zipfile; names = zipfile.ZipFile('vscode-client/dist/egcfg.vsix').namelist(); \
	  wheels = [n for n in names if n.startswith('extension/wheels/egcfg-') and n.endswith('.whl')]; \
	  print(*wheels) if wheels else sys.exit('make vsix: the .vsix carries no egcfg wheel')"

# End-to-end test in a real VS Code (code-server + headless chromium); installs what it needs
# (apt packages only when run as root). Screenshots: test-output/e2e/
e2e:
	tests/e2e/vscode/run.sh

# End-to-end test of "Set up EG-CFG": from a bare interpreter to a ready server, offline (pip
# installs from a local wheelhouse). Screenshots: test-output/e2e-setup/
e2e-setup:
	tests/e2e/vscode/setup_e2e.sh
