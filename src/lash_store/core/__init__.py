"""Backend-neutral logic: validation, encoding, commit ordering, GC marking, queue rules.

Backends (``lash_store.sqlite``, later ``lash_store.postgres``) hold only SQL
and locking; everything that decides *what* is written lives here, once.
"""
