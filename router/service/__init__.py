"""The service: one process wired together, its tasks supervised, started and stopped in order."""
