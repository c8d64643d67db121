"""Researcher: proposes new mixers from memory and the local LLM."""
