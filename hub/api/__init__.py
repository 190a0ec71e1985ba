"""REST handlers, Semaphore-shaped: same paths, field names and status codes."""
