"""Execution pools: prefork (supervisor + consuming children) and threads."""
