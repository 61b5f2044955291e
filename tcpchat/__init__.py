"""tcpchat: a self-hosted, real-time group chat for local networks."""

__version__ = "0.1.0"
