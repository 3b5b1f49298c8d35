"""Platform to governor: events (instance lifecycle, scale requests, capacity offers,
metrics), signed webhook deliveries through a durable queue, and the live events stream.

Submodules import nothing from the API layer; `service.WebhookService` wires the
background parts (deliverer, change follower, monitor) for the daemon.
"""
