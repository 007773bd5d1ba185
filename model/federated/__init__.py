"""Federated learning pieces, plain numpy: aggregation (FedAvg, buffered asynchronous
with staleness weights, personalization), update compression with error feedback,
client-level differential privacy with an RDP accountant, and pairwise secure
aggregation masks."""
