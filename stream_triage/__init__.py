"""stream-triage: live log triage into a short, trustworthy list of production issues."""

__version__ = "0.1.0"
