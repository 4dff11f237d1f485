"""Storage backends: the embedded SQLite default and the PostgreSQL team store."""
