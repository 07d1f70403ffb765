"""The REST API (FastAPI): tasks, submissions, results and webhooks for LMSs, instructors and students."""
