"""The mixer domain, spoken by the researcher, the engineer and the debugger alike.

- ``source``: static checks of a mixer file (what can be told without running it) and code similarity;
- ``edit``: deterministic repair and putting what an LLM wrote in place; ``unified_diff``;
- ``repairs``: the debugger's mechanical repairs, one per error class with a known fix;
- ``frames``: the faulty function a traceback points at, the failing frame's locals, a failure's error signature;
- ``loader``: the one way a mixer file is imported (only ever inside the sandbox for LLM-written code);
- ``contract``: what a mixer must define, and building and calling one with the contract enforced;
- ``checks``: the engineer's measured checks, and ``model``: the language model they and the trainer build;
- ``behaviour``: the behaviour probe's signature, and ``probe``: the probe run sandboxed on a draft;
- ``trial``: the checks a patch must pass, run sandboxed on it by the debugger;
- ``baselines``: the built-in mixers with their slow references; ``profiles``: the training profiles;
- ``sandbox``: the child process that untrusted code runs in.
"""
