"""Costs and the primal/dual architecture search."""
