"""Tasks and optional timing hooks for ``bench/latency_probe.py``.

Installed into testproject with ``TQ_EXTRA_APPS=bench.latency_app`` (the probe sets it).
"""
