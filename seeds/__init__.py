"""Scenario seeds: the regional cluster (sites, lines, machines, calendars, fault profiles) and example agent configs."""
