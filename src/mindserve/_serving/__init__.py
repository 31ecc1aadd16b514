"""Serving: the runtime, its version slots, loading, running versions, model queues, pipelines."""
