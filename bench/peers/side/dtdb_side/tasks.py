from benchcounter import hit
from django_tasks import task


@task()
def noop():
    hit()
    return 1


@task()
def rt():
    return 1
