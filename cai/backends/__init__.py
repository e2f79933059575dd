"""Model backends: transformers and vLLM behind one protocol (see base.py)."""
