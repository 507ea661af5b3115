"""Ingestion into the bronze tables: Kafka consumer, file ingest, upload gateway."""
