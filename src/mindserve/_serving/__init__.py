"""Serving a version in a process: a runtime's version slots, loading, running versions, model queues, pipelines."""
