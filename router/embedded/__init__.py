"""Embedded servers: the redis-server and MQTT broker a service can start for itself."""
