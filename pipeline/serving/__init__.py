"""Serving: a FastAPI recommendation service for a policy evaluated in a run, learning online, with durable state."""
