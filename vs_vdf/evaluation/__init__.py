"""Verification: what protection does to the attackers' models and pipelines."""
