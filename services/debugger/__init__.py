"""Debugger: patches failed mixers with the LLM, within a bounded number of attempts."""
