"""picklewarden."""
