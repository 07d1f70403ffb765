"""The host's half of grading: specs, results, the facts' parser and the judges.

It runs on the host only: no sandbox holds it, and it never imports the in-sandbox code
(`sandboxed/`), only the contract both sides share (`contract/`). Importing it never
imports torch: the API and the worker validate specs and results cheaply.
"""
