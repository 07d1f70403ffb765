"""Where untrusted code runs. A small `SandboxBackend` protocol, its implementations, and a factory."""
