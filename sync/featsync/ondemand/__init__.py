"""On-demand features: SQL expressions compiled once for the warehouses and for online reads."""
