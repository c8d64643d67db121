"""Engineer: checks and trains proposed mixers in a sandbox, reports the outcome."""
