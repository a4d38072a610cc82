"""The shipped models, each plain PyTorch in one file, written as for a single run: actbench
packs, initialises and probes them (actbench.packer), and a user's model looks the same."""
