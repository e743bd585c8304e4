"""The worker: ``Worker(...).run()``; ``manage.py runworker`` is a thin command around it.

Where things happen (see docs/worker.md):

* ``worker.py``   the ``Worker`` class: configuration, pools, signals, remote control API
* ``engine.py``   one process's consume-and-execute loop (calls ``execution.execute``)
* ``intake.py``   raw message -> job, or a clear refusal (dead letter)
* ``outcomes.py`` ack / requeue / dead letter after the outcome
* ``pools/``      ``prefork.py`` (supervisor) + ``child.py``, ``threads.py``; solo is the engine inline
* ``consumer.py`` the broker connection; ``holding.py`` near ETAs and rate-limited tasks;
  ``delayed.py`` far ETAs; ``ratelimits.py``/``timelimits.py``; ``slots.py`` shared memory;
  ``sidecar.py``; ``services.py`` heartbeat row, events, delayed publisher
"""

from .worker import Worker

__all__ = ["Worker"]
