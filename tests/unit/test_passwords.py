"""The password policy is Solihull ISP 4.3.2's floor; generated passwords are far stronger."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.passwords import ALPHABET, PasswordPolicy, broken_rules, check, generate
from gateway.core.errors import PolicyError
from gateway.core.secret import Secret

POLICY = PasswordPolicy()


def test_seven_characters_break_the_length_rule_and_eight_pass() -> None:
    assert broken_rules(Secret("Ab3#xyz"), POLICY) == ["at least 8 characters"]
    assert broken_rules(Secret("Ab3#xyzw"), POLICY) == []
    check(Secret("Ab3#xyzw"), POLICY)


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("abc3#xyzw", "an upper-case letter"),
        ("ABC3#XYZW", "a lower-case letter"),
        ("Abcd#xyzw", "a digit"),
        ("Abc3dxyzw", "a special character such as ! or #"),
    ],
)
def test_each_missing_class_is_named(password: str, rule: str) -> None:
    assert broken_rules(Secret(password), POLICY) == [rule]
    with pytest.raises(PolicyError) as raised:
        check(Secret(password), POLICY)
    assert raised.value.message == (
        f"the password breaks the partnership's password policy (Solihull ISP 4.3.2): it needs {rule}; choose another"
    )


def test_every_broken_rule_is_listed_and_the_password_never_appears() -> None:
    with pytest.raises(PolicyError) as raised:
        check(Secret("qqqq"), POLICY)
    message = raised.value.message
    assert "at least 8 characters, an upper-case letter, a digit and a special character such as ! or #" in message
    assert "qqqq" not in message and "qqqq" not in repr(raised.value)


def test_a_stricter_policy_is_applied() -> None:
    assert broken_rules(Secret("Ab3#xyzw"), PasswordPolicy(min_length=12)) == ["at least 12 characters"]


@pytest.mark.parametrize(
    "weaker",
    [{"min_length": 7}, {"upper": False}, {"lower": False}, {"digit": False}, {"special": False}],
)
def test_a_policy_weaker_than_the_protocol_cannot_exist(weaker: dict[str, object]) -> None:
    with pytest.raises(PolicyError, match=r"Solihull ISP 4\.3\.2"):
        PasswordPolicy(**weaker)  # type: ignore[arg-type]


@given(st.text(max_size=20))
def test_check_raises_exactly_when_a_rule_is_broken(text: str) -> None:
    if broken_rules(Secret(text), POLICY):
        with pytest.raises(PolicyError):
            check(Secret(text), POLICY)
    else:
        check(Secret(text), POLICY)


@pytest.mark.parametrize("length", [24, 32, 64])
def test_generated_passwords_have_the_length_and_every_class(length: int) -> None:
    for _ in range(200):
        value = generate(length).reveal()
        assert len(value) == length
        assert any(c.isupper() for c in value) and any(c.islower() for c in value)
        assert any(c.isdigit() for c in value) and any(not c.isalnum() for c in value)


def test_a_thousand_generated_passwords_are_distinct_and_pass_the_policy() -> None:
    values = [generate() for _ in range(1000)]
    assert len({value.reveal() for value in values}) == 1000
    for value in values:
        check(value, POLICY)


def test_generated_passwords_avoid_ambiguous_and_shell_hostile_characters() -> None:
    seen = set("".join(generate(64).reveal() for _ in range(300)))
    assert not seen & set(" '\"\\`$l1IO0!%^&|;<>()*?[]{}~")
    assert seen == set(ALPHABET)  # every allowed character is actually used


def test_generated_passwords_are_never_shorter_than_24() -> None:
    with pytest.raises(ValueError, match="at least 24"):
        generate(23)


def test_a_generated_password_does_not_leak_through_repr_or_str() -> None:
    password = generate()
    assert password.reveal() not in repr(password) + str(password) + f"{password}"
