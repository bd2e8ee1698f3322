from search.config import Settings


def test_settings_fixture_is_a_fresh_lite_db(settings: Settings) -> None:
    assert settings.store.is_lite and settings.store.uri.endswith("test.db")


def test_the_heavy_files_named_for_scheduling_exist() -> None:
    """conftest hands these files out first; a renamed one would silently lose its place."""
    from pathlib import Path

    from tests.conftest import HEAVY_FIRST

    root = Path(__file__).resolve().parents[2]
    assert [p for p in HEAVY_FIRST if not (root / p).is_file()] == []
