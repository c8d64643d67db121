"""Analyst: compares a finished run with its relatives, writes the report, fills the gallery."""
