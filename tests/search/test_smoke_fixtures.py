from search.config import Settings


def test_settings_fixture_is_a_fresh_lite_db(settings: Settings) -> None:
    assert settings.is_lite and settings.uri.endswith("test.db")
