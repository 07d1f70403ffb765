"""The application layer: one function per use case, the same for every front door.

The REST API, the worker, `gradectl` (and the pages and LTI launches to come) parse their
input, call one use case with a `Context` and the caller's `Principal`, and present what
it returns. Each use case checks access (`access.py`), owns its transaction and sends its
queue messages only after that transaction committed (`unit_of_work.py`).
"""
