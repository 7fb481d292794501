"""Volunteers service: the volunteer card (义工卡): activities, hours, points, rewards, certificates."""
