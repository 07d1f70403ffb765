"""Grading contracts, behavioural checks and the sandbox harness.

Importing this package (or `graders.spec`, `graders.result`) never imports torch: the
API and the worker validate specs and results cheaply. Only the harness, which runs
inside the sandbox, imports torch.
"""
