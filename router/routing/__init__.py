"""Routing: compiled rules that pick an event's class and key, and the envelope it gets."""
