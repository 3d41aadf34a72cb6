"""Privacy for federated rounds: differential privacy and secure aggregation."""
