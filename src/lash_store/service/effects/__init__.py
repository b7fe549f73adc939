"""The effect journal's behaviour, written once over the backend ports (see :mod:`.service`)."""
