"""The sandbox layer's root exception: the infrastructure failed, not the student."""


class SandboxError(Exception):
    """A backend could not run a job (engine down, image missing, spawn failed). Retryable."""


class BackendUnavailable(SandboxError):
    """The requested backend cannot run on this machine (no engine, no GPU where one is required)."""
