"""Recipe and site files: schema, loading, validation."""
