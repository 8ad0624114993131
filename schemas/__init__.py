"""Avro schemas for every message in and out, the message dataclasses, and the codec."""
