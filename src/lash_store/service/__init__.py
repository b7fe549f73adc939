"""Backend-neutral services: the behaviour of every store method, written once.

A service speaks to a backend only through the narrow ports of
:mod:`lash_store.service.ports`: a transaction runner and named queries.
Backends (``lash_store.sqlite``, ``lash_store.postgres`` and the in-memory
reference in ``lash_store.testing``) hold SQL and locking, nothing else.
"""
