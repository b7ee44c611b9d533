"""A local Azure Batch service: the data-plane REST API, with nodes on this machine."""
