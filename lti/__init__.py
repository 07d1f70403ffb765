"""LTI 1.3 Advantage, on PyLTI1p3 (the `pylti1p3next` fork): the tool's keys, the platforms'
registry as the library reads it, the values a launch keeps server-side, and the library's
request, cookie, redirect and launch classes bound to plain values a front door fills in.

Below the use cases, like services/: it takes a database session, never opens one, and knows
nothing of FastAPI."""
