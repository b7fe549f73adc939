"""The host-event store's behaviour, written once over the backend ports (see :mod:`.service`)."""
