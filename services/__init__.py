"""Use cases shared by the CLI, the API and the worker: grade an answer, validate a spec, load tasks."""
