"""Switchyard: route device and app events through priority-laned Redis Streams to actor pools."""

__version__ = "0.1.0"
