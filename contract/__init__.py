"""What the host and the sandbox agree on: the job, the fast path's wire format and each
check type's parameters.

Both sides import it, and it imports neither: the standard library and pydantic only, no
torch, no numpy, nothing of the project outside `contract`.
"""
