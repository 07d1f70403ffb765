"""Settings shared by every deployable (CLI, API, worker)."""
