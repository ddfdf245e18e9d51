"""Tasks (synthetic and real math data from local files) and prompt templates."""
