"""What every breedfilter command says when AWS cannot be reached for want of credentials (one wording, one place).

python -c "from breedfilter.aws_hints import NO_CREDENTIALS; print(NO_CREDENTIALS)"
"""

CREDENTIALS_HINT = (
    "configure credentials with `aws configure` (or `aws configure sso`), "
    "or pick a profile with AWS_PROFILE=NAME, then check them with `aws sts get-caller-identity`"
)
NO_CREDENTIALS = f"no AWS credentials found: {CREDENTIALS_HINT}"
