"""Settlement, statement formats, reconciliation, suspense items and withdrawal batches.

Built by the clearing issue; reads payments, never the other way round.
"""
