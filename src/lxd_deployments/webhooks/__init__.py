"""Webhook delivery: signing, the deliverer (the worker of the durable queue the store
keeps) and the wiring of the background event duties for the daemon.

Events themselves (names, payloads, the bus) are the core's (`core/events.py`,
`core/event_bus.py`): this package depends on the core, never the reverse, and imports
nothing from the API layer; `service.WebhookService` wires the background parts
(deliverer, change follower, monitor, pets' duty) for the daemon.
"""
