"""What users write: servables, models, stages, methods, and the tracing of method bodies."""
