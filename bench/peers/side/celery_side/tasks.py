from benchcounter import hit

from .celery_app import app


@app.task
def noop():
    hit()
    return 1


@app.task
def rt():
    return 1
