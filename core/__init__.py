"""Pieces every package of the platform shares: the database handle and its metadata."""
