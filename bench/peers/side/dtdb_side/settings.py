from benchenv import django_base

globals().update(django_base(["django_tasks", "django_tasks_db", "dtdb_side"]))

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
