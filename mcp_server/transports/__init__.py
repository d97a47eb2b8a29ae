"""Transports: each is a thin shell that turns its wire into the SDK's read/write streams."""
