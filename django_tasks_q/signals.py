"""Django signals sent around tasks and workers (observers that change nothing)."""

from django.dispatch import Signal

#: after a task message is published. kwargs: sender (task name), task_id, message, queue
task_sent = Signal()
#: a worker received a message. kwargs: sender (task), request
task_received = Signal()
#: before the task body runs. kwargs: sender (task), task_id, task, args, kwargs, request
task_prerun = Signal()
#: after the task body ran (any outcome). kwargs: sender, task_id, task, args, kwargs, retval, state
task_postrun = Signal()
#: kwargs: sender (task), result, request
task_success = Signal()
#: kwargs: sender (task), task_id, exception, args, kwargs, traceback, einfo, request
task_failure = Signal()
#: kwargs: sender (task), request, reason, einfo
task_retry = Signal()
#: kwargs: sender (task), request, terminated, signum, expired
task_revoked = Signal()
#: kwargs: sender (task), request, state, meta — update_state() was called (progress)
task_state_updated = Signal()
#: kwargs: sender (Worker)
worker_ready = Signal()
#: kwargs: sender (Worker)
worker_shutdown = Signal()
#: in each pool child process after start. kwargs: sender (Worker or None)
worker_process_init = Signal()
