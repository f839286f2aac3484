"""Django's PostgreSQL backend, with the pool's health check made cheap (see base)."""
