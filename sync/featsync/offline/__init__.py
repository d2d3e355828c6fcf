"""The offline side: the warehouse connection (Arrow out of each engine) and ad-hoc training sets."""
