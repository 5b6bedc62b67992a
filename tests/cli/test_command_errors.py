"""How the reconcile, backfill and redrive commands report a failure: one ``command: reason`` line, exit 2 for
a usage error, 1 for AWS refusing (breedfilter.reconcile_cli.run_reported, which all three call)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from breedfilter.aws_hints import NO_CREDENTIALS
from breedfilter.reconcile_cli import TargetError, run_reported


def raising(exc: BaseException):
    def work():
        raise exc

    return work


def test_a_result_comes_back_with_exit_0(capsys):
    assert run_reported("reconcile", lambda: "report") == ("report", 0)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("exc", "usage", "code", "line"),
    [
        (TargetError("no stack: run breedfilter local up"), (), 2, "redrive: no stack: run breedfilter local up"),
        (ValueError("--into must end with /"), (ValueError,), 2, "redrive: --into must end with /"),
        (NoCredentialsError(), (), 1, f"redrive: {NO_CREDENTIALS}"),
        (
            ClientError({"Error": {"Code": "AccessDenied", "Message": "not yours"}}, "ListObjectVersions"),
            (),
            1,
            "redrive: AccessDenied: not yours",
        ),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), (), 1, "redrive: Could not connect"),
    ],
)
def test_failures_print_one_line_and_exit_with_their_code(capsys, exc, usage, code, line):
    assert run_reported("redrive", raising(exc), usage) == (None, code)
    assert capsys.readouterr().err.startswith(line)


def test_an_error_not_named_is_not_swallowed():
    with pytest.raises(ValueError):
        run_reported("backfill", raising(ValueError("a bug")))
