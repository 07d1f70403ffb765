"""The Celery worker: takes a submission id, grades it in the sandbox, stores the result."""
