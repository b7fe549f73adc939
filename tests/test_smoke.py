from lash_store import Store
from tests.helpers import commit_at


def test_first_commit_creates_revision_one(memory_store: Store) -> None:
    result = memory_store.commit_runtime_state(commit_at("root", 0))
    assert result.head_revision == 1
    read = memory_store.load_session()
    assert read is not None and read.head_revision == 1
