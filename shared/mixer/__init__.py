"""The mixer domain, spoken by the researcher, the engineer and the debugger alike.

- ``source``: static checks of a mixer file (what can be told without running it) and code similarity;
- ``edit``: deterministic repair and putting what an LLM wrote in place; ``unified_diff``;
- ``frames``: the faulty function a traceback points at;
- ``loader``: the one way a mixer file is imported (only ever inside the sandbox for LLM-written code);
- ``contract``: what a mixer must define, and building and calling one with the contract enforced;
- ``behaviour``: the behaviour probe's signature, and ``probe``: the probe run sandboxed on a draft;
- ``baselines``: the built-in mixers with their slow references; ``profiles``: the training profiles;
- ``sandbox``: the child process that untrusted code runs in.
"""
