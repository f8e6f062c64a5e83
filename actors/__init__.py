"""Actors: the public actor API (`actors.api`), built-in actors and the three workloads."""
