"""tcpchat: a self-hosted, real-time group chat for local networks."""

__version__ = "0.3.0.dev0"
