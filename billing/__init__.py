"""Fee schedules, channel costs, platform fees, charge items and coupons.

Built by the clearing and portals issues.
"""
