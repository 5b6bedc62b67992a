"""routing.settings.Settings.from_env: the router's configuration, read from a mapping like os.environ."""

from __future__ import annotations

import pytest

from routing.settings import FALLBACK_CONFIDENCE_THRESHOLD, ConfigError, Settings

REQUIRED = {
    "SORTED_BUCKET": "breedfilter-sorted-123456789012-us-east-1",
    "RESULTS_TABLE": "breedfilter-results",
    "IDEMPOTENCY_TABLE": "breedfilter-idempotency",
    "ENDPOINT_NAME": "breedfilter-classifier",
}
OPTIONAL = [
    "CONFIDENCE_THRESHOLD",
    "MAX_IMAGE_BYTES",
    "TOP_K",
    "ENDPOINT_TIMEOUT_SECONDS",
    "ENDPOINT_MAX_ATTEMPTS",
    "IDEMPOTENCY_TTL_SECONDS",
    "RECORD_CONCURRENCY",
]


def env(**overrides: str) -> dict[str, str]:
    return {**REQUIRED, **overrides}


def test_required_only_gives_the_defaults() -> None:
    settings = Settings.from_env(dict(REQUIRED))
    assert settings.sorted_bucket == "breedfilter-sorted-123456789012-us-east-1"
    assert settings.results_table == "breedfilter-results"
    assert settings.idempotency_table == "breedfilter-idempotency"
    assert settings.endpoint_name == "breedfilter-classifier"
    assert settings.confidence_threshold is None  # the model's own threshold, from each answer
    assert settings.max_image_bytes == 4 * 1024 * 1024
    assert settings.top_k == 3
    assert settings.endpoint_timeout_seconds == 10.0
    assert settings.endpoint_max_attempts == 3
    assert settings.idempotency_ttl_seconds == 86_400


def test_empty_optional_values_give_the_defaults() -> None:
    settings = Settings.from_env(env(**dict.fromkeys(OPTIONAL, "")))
    assert settings == Settings.from_env(dict(REQUIRED))
    assert settings.top_k == 3


def test_present_values_are_parsed() -> None:
    settings = Settings.from_env(
        env(
            CONFIDENCE_THRESHOLD="0.85",
            MAX_IMAGE_BYTES="6291456",
            TOP_K="5",
            ENDPOINT_TIMEOUT_SECONDS="2.5",
            ENDPOINT_MAX_ATTEMPTS="7",
            IDEMPOTENCY_TTL_SECONDS="3600",
        )
    )
    assert settings.confidence_threshold == 0.85
    assert settings.max_image_bytes == 6_291_456
    assert isinstance(settings.max_image_bytes, int)
    assert settings.top_k == 5
    assert isinstance(settings.top_k, int)
    assert settings.endpoint_timeout_seconds == 2.5
    assert settings.endpoint_max_attempts == 7
    assert settings.idempotency_ttl_seconds == 3600


def test_values_with_surrounding_whitespace_are_parsed() -> None:
    settings = Settings.from_env(env(CONFIDENCE_THRESHOLD=" 0.7 ", TOP_K="4\n"))
    assert settings.confidence_threshold == 0.7
    assert settings.top_k == 4


def test_whitespace_only_values_give_the_defaults() -> None:
    settings = Settings.from_env(env(TOP_K="   ", CONFIDENCE_THRESHOLD="\t"))
    assert settings.top_k == 3
    assert settings.confidence_threshold is None


@pytest.mark.parametrize("value", ["model", "MODEL", " Model ", "model\n"])
def test_confidence_threshold_model_means_the_models_own(value: str) -> None:
    settings = Settings.from_env(env(CONFIDENCE_THRESHOLD=value))
    assert settings.confidence_threshold is None
    assert settings == Settings.from_env(dict(REQUIRED))  # model is the default


@pytest.mark.parametrize(("value", "parsed"), [("0.8", 0.8), ("0", 0.0), ("1", 1.0), ("1.0", 1.0), (".5", 0.5)])
def test_confidence_threshold_number_overrides_the_model(value: str, parsed: float) -> None:
    assert Settings.from_env(env(CONFIDENCE_THRESHOLD=value)).confidence_threshold == parsed


@pytest.mark.parametrize("value", ["models", "auto", "mod el", "0.8model", "yes", "none", "true"])
def test_confidence_threshold_other_words_are_refused_clearly(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(CONFIDENCE_THRESHOLD=value))
    message = str(caught.value)
    assert "CONFIDENCE_THRESHOLD" in message and repr(value) in message
    assert "'model' or a number in [0, 1]" in message


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "inf"])
def test_confidence_threshold_numbers_outside_zero_one_name_both_forms(value: str) -> None:
    with pytest.raises(ConfigError, match=r"CONFIDENCE_THRESHOLD must be 'model' or a number within \[0, 1\]"):
        Settings.from_env(env(CONFIDENCE_THRESHOLD=value))


def test_the_fallback_threshold_is_the_old_default() -> None:
    assert FALLBACK_CONFIDENCE_THRESHOLD == 0.6


def test_unrelated_variables_are_ignored() -> None:
    settings = Settings.from_env(env(POWERTOOLS_SERVICE_NAME="breedfilter-router", PATH="/usr/bin"))
    assert settings == Settings.from_env(dict(REQUIRED))


def test_all_missing_required_variables_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({})
    message = str(caught.value)
    for name in REQUIRED:
        assert name in message


@pytest.mark.parametrize("absent", sorted(REQUIRED))
def test_one_missing_required_variable_is_named_alone(absent: str) -> None:
    partial = {k: v for k, v in REQUIRED.items() if k != absent}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(partial)
    message = str(caught.value)
    assert absent in message
    for present in set(REQUIRED) - {absent}:
        assert present not in message


def test_two_missing_and_one_empty_are_all_named() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SORTED_BUCKET": "b", "RESULTS_TABLE": ""})
    message = str(caught.value)
    assert "RESULTS_TABLE" in message
    assert "IDEMPOTENCY_TABLE" in message
    assert "ENDPOINT_NAME" in message
    assert "SORTED_BUCKET" not in message


@pytest.mark.parametrize("name", OPTIONAL)
@pytest.mark.parametrize("value", ["abc", "ten", "0,5", "1e", "--1"])
def test_non_numeric_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(**{name: value}))
    assert name in str(caught.value)


@pytest.mark.parametrize(
    "name", ["MAX_IMAGE_BYTES", "TOP_K", "ENDPOINT_MAX_ATTEMPTS", "IDEMPOTENCY_TTL_SECONDS", "RECORD_CONCURRENCY"]
)
def test_integer_variables_refuse_fractions(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(**{name: "3.5"}))
    assert name in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONFIDENCE_THRESHOLD", "1.5"),
        ("CONFIDENCE_THRESHOLD", "-0.1"),
        ("CONFIDENCE_THRESHOLD", "nan"),
        ("TOP_K", "0"),
        ("TOP_K", "-3"),
        ("RECORD_CONCURRENCY", "0"),
        ("RECORD_CONCURRENCY", "11"),
        ("IDEMPOTENCY_TTL_SECONDS", "59"),
        ("IDEMPOTENCY_TTL_SECONDS", "0"),
        ("MAX_IMAGE_BYTES", "0"),
        ("MAX_IMAGE_BYTES", "-1"),
        ("ENDPOINT_TIMEOUT_SECONDS", "0"),
        ("ENDPOINT_TIMEOUT_SECONDS", "-2"),
        ("ENDPOINT_MAX_ATTEMPTS", "0"),
    ],
)
def test_out_of_range_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(**{name: value}))
    assert name in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "field", "parsed"),
    [
        ("CONFIDENCE_THRESHOLD", "0", "confidence_threshold", 0.0),
        ("CONFIDENCE_THRESHOLD", "1", "confidence_threshold", 1.0),
        ("TOP_K", "1", "top_k", 1),
        ("IDEMPOTENCY_TTL_SECONDS", "60", "idempotency_ttl_seconds", 60),
        ("MAX_IMAGE_BYTES", "1", "max_image_bytes", 1),
        ("ENDPOINT_MAX_ATTEMPTS", "1", "endpoint_max_attempts", 1),
    ],
)
def test_boundary_values_are_accepted(name: str, value: str, field: str, parsed: float) -> None:
    assert getattr(Settings.from_env(env(**{name: value})), field) == parsed


def test_settings_are_hashable_and_equal_by_value() -> None:
    # app.router_for caches one Router per Settings.
    first = Settings.from_env(env(TOP_K="4"))
    second = Settings.from_env(env(TOP_K="4"))
    assert first == second
    assert hash(first) == hash(second)
    assert first != Settings.from_env(env(TOP_K="5"))


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOP_K", "6")
    assert Settings.from_env().top_k == 6
    monkeypatch.delenv("ENDPOINT_NAME")
    with pytest.raises(ConfigError, match="ENDPOINT_NAME"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("pointer", "accepted"),
    [("0", True), ("4194304", True), ("52428800", True), ("1073741824", True), ("4194303", False), ("-1", False),
     ("1073741825", False)],
)  # fmt: skip
def test_the_pointer_limit_is_off_or_between_the_body_limit_and_one_gib(pointer: str, accepted: bool) -> None:
    values = env(MAX_IMAGE_BYTES="4194304", MAX_POINTER_IMAGE_BYTES=pointer)
    if accepted:
        assert Settings.from_env(values).max_pointer_image_bytes == int(pointer)
    else:
        with pytest.raises(ConfigError, match="MAX_POINTER_IMAGE_BYTES must be 0"):
            Settings.from_env(values)
