"""Feedback service: satisfaction ratings (居民评价), follow-up of bad ratings, rankings, support plans."""
