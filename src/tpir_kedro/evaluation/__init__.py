"""Evaluation: fold logic, probes and metrics."""
