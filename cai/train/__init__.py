"""Training stages, thin over TRL: SFT, the soft-label preference model, RL (RLOO/GRPO) and DPO."""
