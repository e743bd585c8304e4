"""django-tasks + django-tasks-db peer: the database is both queue and result store."""
