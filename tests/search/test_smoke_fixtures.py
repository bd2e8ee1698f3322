from search.config import Settings


def test_settings_fixture_is_a_fresh_lite_db(settings: Settings) -> None:
    assert settings.store.is_lite and settings.store.uri.endswith("test.db")
