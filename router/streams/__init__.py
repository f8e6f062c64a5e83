"""Class streams in Redis: the envelope, the key layout, the transport, dead letters, retention."""
