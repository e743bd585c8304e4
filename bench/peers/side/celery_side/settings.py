"""Django settings for the Celery peer (django-celery-results for database results)."""

from benchenv import django_base

globals().update(django_base(["django_celery_results"]))
