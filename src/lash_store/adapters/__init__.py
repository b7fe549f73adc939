"""Framework adapters: lash-store behind the persistence interfaces of agent frameworks.

``lash_store.adapters.langgraph.LashSaver`` is a LangGraph checkpointer
(``pip install 'lash-store[langgraph]'``).  Adapters use only the public store
API (``lash_store.api.SessionStoreAPI`` and the session factories), so they
run on every backend.
"""
