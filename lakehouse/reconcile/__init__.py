"""End-to-end reconciliation: every reading accounted for from Kafka to gold."""
