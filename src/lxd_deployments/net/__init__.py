"""The listeners' defences: connection caps, the file descriptor budget, and the HTTP
protocol with its timeouts and size limits (see `servers.py` for how they are wired)."""
