"""Proof kit for lash-store backends: reference store, conformance suite, crash harness."""
