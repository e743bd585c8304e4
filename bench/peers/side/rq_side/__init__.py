"""RQ peer: plain functions; results are RQ's own (a Redis stream per job)."""
