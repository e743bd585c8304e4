"""Dramatiq peer: the broker (and Results middleware) from the bench environment."""
