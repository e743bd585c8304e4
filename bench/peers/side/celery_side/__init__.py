"""Celery peer: a Django project (settings.py) with a Celery app (celery_app.py)."""
