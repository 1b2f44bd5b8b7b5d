"""modkit's built-in plugins."""
