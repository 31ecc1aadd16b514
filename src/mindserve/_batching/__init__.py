"""How instances of many calls become batches: the scheduler and the pure shape helpers."""
