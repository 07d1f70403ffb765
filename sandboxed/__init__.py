"""The code that runs inside the sandbox, beside the answer: the harness, the fast path's
fork server, the tamper-resistant readers, the integrity snapshots and each check type's
observer (`observe/`).

The host never imports it; it imports the contract (`contract/`), torch and numpy, never
the host's packages. Nothing here decides a score: it records facts.
"""
