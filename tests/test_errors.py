from __future__ import annotations

from stratuslab import errors


def test_every_error_has_its_own_documented_exit_code() -> None:
    classes = [
        errors.Invalid,
        errors.NotFound,
        errors.Conflict,
        errors.CapacityExceeded,
        errors.NotSupported,
        errors.Unauthorized,
        errors.BackendError,
        errors.BackendUnavailable,
    ]
    codes = [cls.exit_code for cls in classes]
    assert len(set(codes)) == len(codes)
    assert all(str(code) in errors.__doc__ for code in codes)  # type: ignore[operator]
    assert not {1, 2, errors.EXIT_USAGE} & set(codes), (
        "1, 2 and 64 belong to deploy outcomes and usage"
    )


def test_errors_travel_by_name_through_the_api() -> None:
    assert errors.by_name("CapacityExceeded") is errors.CapacityExceeded
    assert errors.by_name("NoSuchThing") is errors.StratusError


def test_a_failed_command_says_what_ran_and_the_last_line_of_its_stderr() -> None:
    failure = errors.CommandFailed(
        ["debootstrap", "bookworm"], 1, "", "I: start\nE: no route to host\n"
    )
    assert str(failure) == "`debootstrap bookworm` exited with 1: E: no route to host"
    assert failure.stderr.startswith("I: start")


def test_a_refusal_of_the_site_policy_is_forbidden_exit_77_and_travels_by_name() -> None:
    assert issubclass(errors.Untrusted, errors.Forbidden)
    assert (errors.Untrusted.exit_code, errors.Untrusted.http_status) == (77, 403)
    assert errors.by_name("Untrusted") is errors.Untrusted
    assert "Untrusted" in (errors.__doc__ or "")
