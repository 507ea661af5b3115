"""The upload gateway: devices POST readings with their token; readings go to Kafka."""
