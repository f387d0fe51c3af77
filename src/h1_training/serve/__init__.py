"""GPU server: openpi WebSocket + HTTP API, model pool."""
