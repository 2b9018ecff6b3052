"""Networked collaborative manufacturing: products, capacity, orders and the cross-site planner."""
