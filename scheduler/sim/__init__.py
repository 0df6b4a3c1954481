"""Discrete-event simulation: replay real traces through the same engine with a simulated clock."""
