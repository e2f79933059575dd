"""Evaluations: HHH, AI-vs-human agreement, per-revision scores, Elo and Bradley-Terry ratings."""
