"""Judge: scores novelty and quality with the LLM; the weights are applied in code."""
