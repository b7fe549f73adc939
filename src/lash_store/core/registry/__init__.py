"""The process registry's pure rules, without transactions or I/O (``lash_store.service.registry`` runs them).

* :mod:`.registration` -- normalisation, validation and hashing of registrations (reference §a.5.1) and of
  the other arguments;
* :mod:`.payload_schema` -- the JSON Schema subset an event type's payload is checked against;
* :mod:`.semantics` -- selectors, truthiness, terminal and wake materialisation (§a.5.3), wake deliveries;
* :mod:`.rows` -- stored rows to records and events, and back.
"""
