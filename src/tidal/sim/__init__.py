"""Trace-driven simulator: same snapshot, policy and plan as production, simulated executor and clock."""
