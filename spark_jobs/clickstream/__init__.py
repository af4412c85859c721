"""The click stream job (``main.py``): Kafka → one Structured Streaming query → PostgreSQL and the lake."""
