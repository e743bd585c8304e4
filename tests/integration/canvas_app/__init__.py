"""Tasks for the canvas integration tests; the worker loads them via TQ_EXTRA_APPS."""
