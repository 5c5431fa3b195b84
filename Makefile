.PHONY: e2e vsix

# The VS Code extension, packaged: vscode-client/dist/egcfg.vsix
vsix:
	cd vscode-client && npm ci --no-audit --no-fund && npm test && npm run package

# End-to-end test in a real VS Code (code-server + headless chromium); installs what it needs
# (apt packages only when run as root). Screenshots: test-output/e2e/
e2e:
	tests/e2e/vscode/run.sh
