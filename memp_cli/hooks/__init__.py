"""Agent-host hooks: memp's entries in a host's settings, and the answers to the host's hook events.

One module per host (`claude_code.py`); each is a thin layer over the same domain functions as the CLI (recall,
ingest), with the host's own payload and output shapes.
"""
