"""Shared infrastructure for every service: event store, relay, consumer, HTTP scaffolding.

Infrastructure only: no domain code lives here.
"""
