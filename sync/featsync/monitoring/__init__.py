"""Monitoring: drift between two windows, freshness (status) and online/offline skew (verify)."""
