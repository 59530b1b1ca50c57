"""The streaming services: thin Kafka loops around the stage functions in `shared`."""
