"""The public gateway: the one entry for resident and staff apps (``/api/v1``)."""
