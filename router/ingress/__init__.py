"""Ingress: events arriving over HTTP and MQTT, decoded, bounded, routed and written."""
