from lash_store import Store
from tests.helpers import commit_at


def test_first_commit_creates_revision_one(memory_store: Store) -> None:
    result = memory_store.commit_runtime_state(commit_at("root", 0))
    assert result.head_revision == 1
    read = memory_store.load_session()
    assert read is not None and read.head_revision == 1


def test_the_testing_kit_exports_the_reference_store() -> None:
    from lash_store.testing import ManualClock, ReferenceStore

    clock = ManualClock(5)
    with ReferenceStore() as store:
        assert store.commit_runtime_state(commit_at("root", 0)).head_revision == 1
    assert clock() == 5


def test_async_calls_make_no_getpid_system_call_per_call() -> None:
    """The shared pool is reset by an at-fork hook, not by comparing os.getpid() on every call."""
    import inspect

    from lash_store import aio

    assert "getpid" not in inspect.getsource(aio)
