"""Alerts that reach a person: the device registry, and delivery by signed webhook and over
the MQTT back-channel, retried until the owner has it."""
