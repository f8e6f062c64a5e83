"""The runtime: actor pools that run each class's actor over its stream, and the actor API."""
