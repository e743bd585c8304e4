"""Side-by-side benchmarks of django-tasks-q and its peers (``python -m bench.suite``)."""
