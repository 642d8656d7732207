"""streams: an event-driven replacement for a Celery task system, on Kafka and Faust."""

__version__ = "0.1.0"
