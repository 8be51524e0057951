"""rich terminal views over the tracer's live statistics."""
