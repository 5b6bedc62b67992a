"""Static checks of template.yaml against the router code (read with breedfilter.template.StackTemplate)."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from breedfilter.template import StackTemplate
from breedfilter.units import REPO_ROOT
from routing.results import BY_LABEL_INDEX, BY_STATUS_INDEX
from routing.settings import ENV_VARIABLES, MAX_RECORD_CONCURRENCY, REQUIRED_ENV, ConfigError, Settings

ROUTER_DIR = REPO_ROOT / "functions" / "router"
HEAVY_MODULES = {"torch", "torchvision", "numpy", "PIL", "pillow"}


# Local names for the stack's resources, as the local twin would pass them.
LOCAL_NAMES = {
    "InboxBucket": "breedfilter-inbox-123456789012-us-east-1",
    "SortedBucket": "breedfilter-sorted-123456789012-us-east-1",
    "ResultsTable": "breedfilter-results",
    "IdempotencyTable": "breedfilter-idempotency",
    "InboxQueue": "breedfilter-inbox",
    "InboxDeadLetterQueue": "breedfilter-inbox-dlq",
    "ClassifierEndpoint": "breedfilter-classifier",
    "RouterLogGroup": "/aws/lambda/breedfilter-router",
}


# What !GetAtt X.Arn gives, per resource type (StackTemplate.resolve gives the local name instead).
ARN_FORMATS = {
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:us-east-1:123456789012:table/{name}",
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:us-east-1:123456789012:{name}",
}


@pytest.fixture(scope="module")
def template() -> StackTemplate:
    return StackTemplate.load()


def resources_of_type(template: StackTemplate, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template.document["Resources"].items() if r.get("Type") == kind}


def router(template: StackTemplate) -> dict[str, Any]:
    return template.resource("RouterFunction")["Properties"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- (a) environment ----------------------------------------------------------------------------------------


def test_settings_reads_every_declared_variable() -> None:
    """Every variable routing.settings declares is read by from_env (and so must be set by the template)."""
    valid = dict.fromkeys(REQUIRED_ENV.values(), "x")
    for var in ENV_VARIABLES:
        bad = "" if var in REQUIRED_ENV.values() else "not-a-number"
        with pytest.raises(ConfigError, match=var):
            Settings.from_env({**valid, var: bad})


def test_router_function_sets_every_settings_variable(template: StackTemplate) -> None:
    variables = router(template)["Environment"]["Variables"]
    missing = ENV_VARIABLES - set(variables)
    assert not missing, f"RouterFunction does not set {sorted(missing)}"


def test_template_defaults_parse_as_settings(template: StackTemplate) -> None:
    env = template.function_environment("RouterFunction", LOCAL_NAMES)
    env["ENDPOINT_NAME"] = env["ENDPOINT_NAME"] or "breedfilter-classifier"  # set once an endpoint exists
    settings = Settings.from_env(env)
    assert settings.sorted_bucket == LOCAL_NAMES["SortedBucket"]
    assert settings.results_table == LOCAL_NAMES["ResultsTable"]
    assert settings.idempotency_table == LOCAL_NAMES["IdempotencyTable"]
    assert settings.endpoint_name == "breedfilter-classifier"
    assert template.parameter_default("ConfidenceThreshold") == "model"
    assert settings.confidence_threshold is None  # the model's own threshold, from each answer
    assert settings.max_image_bytes == int(template.parameter_default("MaxImageBytes"))
    assert settings.top_k == int(template.parameter_default("TopK"))


def test_template_defaults_match_the_code_defaults(template: StackTemplate) -> None:
    """The deployed function and a bare Settings(...) behave alike: no drift between the two defaults."""
    env = template.function_environment("RouterFunction", LOCAL_NAMES)
    env["ENDPOINT_NAME"] = "breedfilter-classifier"
    from_template = Settings.from_env(env)
    code_defaults = {f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING}
    assert code_defaults
    for field, default in code_defaults.items():
        assert getattr(from_template, field) == default, field


def confidence_threshold_pattern(template: StackTemplate) -> re.Pattern[str]:
    return re.compile(template.document["Parameters"]["ConfidenceThreshold"]["AllowedPattern"])


@pytest.mark.parametrize("value", ["model", "0", "1", "0.6", "0.8", "0.95", "1.0", "1.00", "0.000001"])
def test_confidence_threshold_parameter_accepts_model_or_a_number_in_zero_one(
    template: StackTemplate, value: str
) -> None:
    """CloudFormation matches AllowedPattern against the whole value; whatever it lets through, the router reads."""
    assert confidence_threshold_pattern(template).fullmatch(value), value
    env = {**dict.fromkeys(REQUIRED_ENV.values(), "x"), "CONFIDENCE_THRESHOLD": value}
    expected = None if value == "model" else float(value)
    assert Settings.from_env(env).confidence_threshold == expected


@pytest.mark.parametrize("value", ["", "Model", "models", "auto", "1.1", "2", "-0.1", "0.6 ", ".5", "1.01", "nan"])
def test_confidence_threshold_parameter_refuses_anything_else(template: StackTemplate, value: str) -> None:
    assert not confidence_threshold_pattern(template).fullmatch(value), value


def test_confidence_threshold_parameter_is_a_string_defaulting_to_model(template: StackTemplate) -> None:
    parameter = template.document["Parameters"]["ConfidenceThreshold"]
    assert parameter["Type"] == "String" and parameter["Default"] == "model"
    assert "model" in parameter["ConstraintDescription"] and "model" in parameter["Description"]
    assert router(template)["Environment"]["Variables"]["CONFIDENCE_THRESHOLD"] == {"Ref": "ConfidenceThreshold"}


def test_endpoint_name_comes_from_the_created_or_existing_endpoint(template: StackTemplate) -> None:
    value = router(template)["Environment"]["Variables"]["ENDPOINT_NAME"]
    condition, created, existing = value["Fn::If"]
    assert condition == "CreateEndpoint"
    assert created == {"Fn::GetAtt": ["ClassifierEndpoint", "EndpointName"]}
    assert existing == {"Ref": "ExistingEndpointName"}


# -- (b) IAM -----------------------------------------------------------------------------------------------


def resource_alternatives(template: StackTemplate, value: Any) -> Iterator[str]:
    """Every string a policy Resource can resolve to (both branches of each Fn::If)."""
    if isinstance(value, list):
        for item in value:
            yield from resource_alternatives(template, item)
    elif isinstance(value, dict) and "Fn::If" in value:
        _, then, otherwise = value["Fn::If"]
        yield from resource_alternatives(template, then)
        yield from resource_alternatives(template, otherwise)
    elif isinstance(value, dict) and "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == "Arn":
        logical_id = value["Fn::GetAtt"][0]
        kind = template.resource(logical_id)["Type"]
        yield ARN_FORMATS[kind].format(name=LOCAL_NAMES[logical_id])
    else:
        yield str(template.resolve(value, LOCAL_NAMES))


def router_statements(template: StackTemplate) -> list[dict[str, Any]]:
    statements = []
    for policy in router(template).get("Policies", []):
        assert isinstance(policy, dict), f"managed policy {policy!r} on the router: use scoped statements"
        assert "Statement" in policy, f"SAM policy template {sorted(policy)} on the router: use scoped statements"
        statements += as_list(policy["Statement"])
    return statements


def test_router_has_scoped_statements(template: StackTemplate) -> None:
    statements = router_statements(template)
    actions = {action for s in statements for action in as_list(s["Action"])}
    assert {"s3:GetObject", "s3:DeleteObject", "s3:PutObject", "sagemaker:InvokeEndpoint"} <= actions
    assert {"dynamodb:GetItem", "dynamodb:PutItem"} <= actions


@pytest.mark.parametrize("service", ["s3", "dynamodb", "sagemaker", "sqs"])
def test_router_never_grants_data_actions_on_every_resource(template: StackTemplate, service: str) -> None:
    checked = 0
    for statement in router_statements(template):
        actions = as_list(statement["Action"])
        assert "*" not in actions and f"{service}:*" not in actions
        if not any(action.startswith(f"{service}:") for action in actions):
            continue
        assert statement["Effect"] == "Allow"
        assert "NotResource" not in statement
        raw = as_list(statement["Resource"])
        assert "*" not in raw, statement.get("Sid")
        for arn in resource_alternatives(template, statement["Resource"]):
            checked += 1
            assert arn != "*", statement.get("Sid")
            assert arn.startswith(f"arn:aws:{service}:"), arn
            if service == "s3":  # objects under a named bucket; never a wildcard bucket
                bucket = arn.removeprefix("arn:aws:s3:::").split("/", 1)[0]
                assert bucket in (LOCAL_NAMES["InboxBucket"], LOCAL_NAMES["SortedBucket"]), arn
            else:
                assert "*" not in arn, arn
    assert checked, f"no {service} statement found on the router"


def test_router_writes_only_to_the_sorted_bucket(template: StackTemplate) -> None:
    for statement in router_statements(template):
        if any(a.startswith("s3:Put") for a in as_list(statement["Action"])):
            for arn in resource_alternatives(template, statement["Resource"]):
                assert arn.startswith(f"arn:aws:s3:::{LOCAL_NAMES['SortedBucket']}/"), arn


# -- (c) queue visibility ---------------------------------------------------------------------------------


def test_queue_visibility_is_at_least_six_times_every_allowed_timeout(template: StackTemplate) -> None:
    timeouts = template.document["Parameters"]["FunctionTimeoutSeconds"]["AllowedValues"]
    assert timeouts
    window_max = int(template.document["Parameters"]["MaximumBatchingWindowInSeconds"]["MaxValue"])
    mapping = template.document["Mappings"]["QueueVisibility"]
    for timeout in timeouts:
        visibility = int(mapping[str(timeout)]["VisibilityTimeout"])
        assert visibility >= 6 * int(timeout), timeout
        assert visibility >= 6 * int(timeout) + window_max, timeout
        assert visibility <= 43_200  # SQS's maximum visibility timeout


def test_queue_and_function_follow_the_timeout_parameter(template: StackTemplate) -> None:
    assert router(template)["Timeout"] == {"Ref": "FunctionTimeoutSeconds"}
    visibility = template.resource("InboxQueue")["Properties"]["VisibilityTimeout"]
    assert visibility == {"Fn::FindInMap": ["QueueVisibility", {"Ref": "FunctionTimeoutSeconds"}, "VisibilityTimeout"]}
    default = template.parameter_default("FunctionTimeoutSeconds")
    assert int(template.resolve(visibility, LOCAL_NAMES)) >= 6 * int(default)


# -- (d) SQS event source ---------------------------------------------------------------------------------


def sqs_events(template: StackTemplate) -> list[dict[str, Any]]:
    """The router's SQS triggers: plain event source mappings (SAM's SQS shorthand is not used, see below)."""
    return [
        r["Properties"]
        for r in template.document["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["FunctionName"] == {"Ref": "RouterFunction"}
    ]


def test_sqs_event_reports_batch_item_failures_and_caps_concurrency(template: StackTemplate) -> None:
    assert not router(template).get("Events"), "SAM's SQS event attaches SQS permissions on Resource '*'"
    (event,) = sqs_events(template)
    assert event["EventSourceArn"] == {"Fn::GetAtt": ["InboxQueue", "Arn"]}
    assert "ReportBatchItemFailures" in event["FunctionResponseTypes"]
    concurrency = event["ScalingConfig"]["MaximumConcurrency"]
    assert concurrency == {"Ref": "MaximumConcurrency"}
    parameter = template.document["Parameters"]["MaximumConcurrency"]
    assert int(parameter["MinValue"]) >= 2  # the event source mapping's own minimum
    assert 2 <= int(parameter["Default"]) <= int(parameter["MaxValue"]) <= 1000


def test_batch_parameters_stay_within_sqs_limits(template: StackTemplate) -> None:
    (event,) = sqs_events(template)
    assert event["BatchSize"] == {"Ref": "BatchSize"}
    batch = template.document["Parameters"]["BatchSize"]
    assert 1 <= int(batch["MinValue"]) <= int(batch["Default"]) <= int(batch["MaxValue"]) <= 10


def test_requests_in_flight_by_default_fit_the_serverless_endpoint(template: StackTemplate) -> None:
    """Every router invocation routes RecordConcurrency records at once: by default, all of them together stay
    within what the serverless endpoint admits, so the defaults never throttle themselves."""
    parameters = template.document["Parameters"]
    assert router(template)["Environment"]["Variables"]["RECORD_CONCURRENCY"] == {"Ref": "RecordConcurrency"}
    record = parameters["RecordConcurrency"]
    assert int(record["MinValue"]) == 1 and int(record["MaxValue"]) == MAX_RECORD_CONCURRENCY
    assert int(record["MaxValue"]) <= int(parameters["BatchSize"]["MaxValue"])
    in_flight = int(parameters["MaximumConcurrency"]["Default"]) * int(record["Default"])
    assert in_flight <= int(parameters["ServerlessMaxConcurrency"]["Default"])


# -- (e) results table ------------------------------------------------------------------------------------


def key_schema(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def test_results_table_indexes_match_the_code(template: StackTemplate) -> None:
    props = template.resource("ResultsTable")["Properties"]
    indexes = {index["IndexName"]: index for index in props["GlobalSecondaryIndexes"]}
    assert set(indexes) == {BY_LABEL_INDEX, BY_STATUS_INDEX}
    assert key_schema(indexes[BY_LABEL_INDEX]["KeySchema"]) == [("label", "HASH"), ("decided_at", "RANGE")]
    assert key_schema(indexes[BY_STATUS_INDEX]["KeySchema"]) == [("status", "HASH"), ("decided_at", "RANGE")]
    for index in indexes.values():
        assert index["Projection"]["ProjectionType"] == "ALL"
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {"pk": "S", "label": "S", "status": "S", "decided_at": "S"}
    assert key_schema(props["KeySchema"]) == [("pk", "HASH")]


def test_results_table_billing_and_recovery(template: StackTemplate) -> None:
    props = template.resource("ResultsTable")["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert template.resource("ResultsTable")["UpdateReplacePolicy"] == "Retain"


def test_index_name_outputs_match_the_code(template: StackTemplate) -> None:
    outputs = template.document["Outputs"]
    assert outputs["ResultsByLabelIndexName"]["Value"] == BY_LABEL_INDEX
    assert outputs["ResultsByStatusIndexName"]["Value"] == BY_STATUS_INDEX


def test_idempotency_table_has_the_powertools_schema(template: StackTemplate) -> None:
    props = template.resource("IdempotencyTable")["Properties"]
    assert key_schema(props["KeySchema"]) == [("id", "HASH")]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


# -- (f) buckets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", ["InboxBucket", "SortedBucket"])
def test_bucket_blocks_public_access_and_encrypts(template: StackTemplate, bucket: str) -> None:
    props = template.resource(bucket)["Properties"]
    block = props["PublicAccessBlockConfiguration"]
    for setting in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        assert block[setting] is True, setting
    rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rules
    assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms", "aws:kms:dsse")


@pytest.mark.parametrize("bucket", ["InboxBucket", "SortedBucket"])
def test_bucket_policy_denies_insecure_transport(template: StackTemplate, bucket: str) -> None:
    policies = [
        p["Properties"]["PolicyDocument"]
        for p in resources_of_type(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    assert len(policies) == 1, f"{bucket} has {len(policies)} bucket policies"
    denials = [
        s
        for s in as_list(policies[0]["Statement"])
        if s["Effect"] == "Deny"
        and str(s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"
    ]
    assert denials, f"{bucket} policy does not deny aws:SecureTransport=false"
    (deny,) = denials
    assert deny["Principal"] == "*"
    assert "s3:*" in as_list(deny["Action"])
    # The bucket itself and every object in it.
    assert sorted(as_list(deny["Resource"]), key=str) == sorted(
        [{"Fn::GetAtt": [bucket, "Arn"]}, {"Fn::Sub": f"${{{bucket}.Arn}}/*"}], key=str
    )


# -- (g) notification and queues --------------------------------------------------------------------------


def test_inbox_notifies_the_inbox_queue_of_created_objects(template: StackTemplate) -> None:
    queues = template.resource("InboxBucket")["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert {"Event": "s3:ObjectCreated:*", "Queue": {"Fn::GetAtt": ["InboxQueue", "Arn"]}} in [
        {"Event": q["Event"], "Queue": q["Queue"]} for q in queues
    ]


def test_sorted_bucket_notifies_nothing(template: StackTemplate) -> None:
    """The router writes to the sorted bucket: a notification there could make it trigger itself."""
    assert "NotificationConfiguration" not in template.resource("SortedBucket")["Properties"]


def test_inbox_queue_policy_lets_only_the_inbox_bucket_send(template: StackTemplate) -> None:
    policy = template.resource("InboxQueuePolicy")["Properties"]
    assert {"Ref": "InboxQueue"} in policy["Queues"]
    (allow,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    source_arn = template.resolve(allow["Condition"]["ArnEquals"]["aws:SourceArn"], LOCAL_NAMES)
    assert source_arn == f"arn:aws:s3:::{LOCAL_NAMES['InboxBucket']}"


def test_inbox_queue_redrives_to_the_dead_letter_queue(template: StackTemplate) -> None:
    redrive = template.resource("InboxQueue")["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["InboxDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert int(template.parameter_default("MaxReceiveCount")) >= 1
    queue = template.resource("InboxQueue")["Properties"]
    dlq = template.resource("InboxDeadLetterQueue")["Properties"]
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


# -- (h) outputs --------------------------------------------------------------------------------------------


def test_every_output_has_a_description(template: StackTemplate) -> None:
    outputs = template.document["Outputs"]
    assert outputs
    for name, output in outputs.items():
        assert str(output.get("Description", "")).strip(), f"output {name} has no Description"
        assert "Value" in output, name


# -- (i) the router stays small --------------------------------------------------------------------------


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_router_requirements_exclude_heavy_packages() -> None:
    names = requirement_names(ROUTER_DIR / "requirements.txt")
    assert "boto3" in names and "aws-lambda-powertools" in names  # the parser read the file
    assert not names & {"torch", "torchvision", "numpy", "pillow", "pil", "opencv-python"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_router_sources_import_no_heavy_modules() -> None:
    sources = sorted(ROUTER_DIR.rglob("*.py"))
    assert ROUTER_DIR / "app.py" in sources and ROUTER_DIR / "routing" / "sniff.py" in sources
    all_imports: set[str] = set()
    for path in sources:
        modules = imported_modules(path)
        all_imports |= modules
        heavy = modules & HEAVY_MODULES
        assert not heavy, f"{path.relative_to(REPO_ROOT)} imports {sorted(heavy)}"
    assert {"boto3", "aws_lambda_powertools", "routing"} <= all_imports  # the scan saw real imports


def test_one_image_worst_case_fits_the_shortest_function_timeout() -> None:
    """A hung endpoint must not be able to time out the function on a single image."""
    template = StackTemplate.load()
    env = template.function_environment("RouterFunction", LOCAL_NAMES)
    settings = Settings.from_env({**env, "ENDPOINT_NAME": "ep"})
    allowed = template.document["Parameters"]["FunctionTimeoutSeconds"]["AllowedValues"]
    assert settings.worst_case_seconds_per_image() < min(int(v) for v in allowed)


def test_deployed_role_has_no_managed_policy_granting_data_actions_everywhere(monkeypatch) -> None:
    """SAM's own transform (offline), as CloudFormation will run it: the router's role gets only the logging
    and X-Ray managed policies; every data action is in its scoped inline statements."""
    import copy

    from samtranslator.translator.transform import transform

    class NoManagedPolicies:  # the template names none; SAM adds its own by ARN without looking them up
        def load(self) -> dict[str, str]:
            return {}

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    document = copy.deepcopy(StackTemplate.load().document)
    for resource in document["Resources"].values():  # the router and the reconciler share one code package
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/router.zip"  # as sam package
    transformed = transform(document, {}, NoManagedPolicies())
    role = transformed["Resources"]["RouterFunctionRole"]["Properties"]
    managed = {arn.rsplit("/", 1)[-1] for arn in role.get("ManagedPolicyArns", [])}
    assert managed == {"AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}
    mappings = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == 1 and mappings[0]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


# -- (j) the functions build for the Lambda's Python without its interpreter ----------------------------------------

FUNCTIONS = ("RouterFunction", "ReconcilerFunction")


def router_makefile(*args: str) -> str:
    """functions/router/Makefile as make reads it: ``print-NAME`` gives a variable's value, else a dry run."""
    probe = 'print-%: ; @printf "%s" "$($*)"'
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "--eval", probe, *args],
        cwd=ROUTER_DIR, capture_output=True, text=True, check=True, env={**os.environ, "PYTHON": "python3"},
    )  # fmt: skip
    return done.stdout


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@needs_make
def test_runtime_and_architecture_are_the_ones_the_makefile_builds_for(template: StackTemplate) -> None:
    """The Lambda's Python is pinned once, in functions/router/Makefile: template.yaml must say the same."""
    version = router_makefile("print-LAMBDA_PYTHON")
    platforms = router_makefile("print-LAMBDA_PLATFORMS").split()
    assert re.fullmatch(r"3\.\d+", version) and platforms
    for name in FUNCTIONS:
        resource = template.resource(name)
        assert resource["Metadata"]["BuildMethod"] == "makefile", name
        props = resource["Properties"]
        assert props["Runtime"] == f"python{version}", name
        assert props["CodeUri"].rstrip("/") == "functions/router", name
        assert props["Architectures"] == ["arm64"] and all(p.endswith("_aarch64") for p in platforms), name


@needs_make
@pytest.mark.parametrize("function", FUNCTIONS)
def test_makefile_target_installs_wheels_for_the_runtime_and_copies_the_code(
    template: StackTemplate, function: str, tmp_path: Path
) -> None:
    recipe = router_makefile("--dry-run", f"build-{function}", f"ARTIFACTS_DIR={tmp_path}")
    version = router_makefile("print-LAMBDA_PYTHON")
    assert "-m pip install" in recipe and "--only-binary=:all:" in recipe and "--implementation cp" in recipe
    assert f"--python-version {version}" in recipe and "--platform manylinux2014_aarch64" in recipe
    assert f'--target "{tmp_path}"' in recipe and "-r requirements.txt" in recipe
    sources = re.search(r"tar --create --exclude=__pycache__ (.+?) \|", recipe)
    assert sources, recipe
    copied = set(sources[1].split())
    module = template.resource(function)["Properties"]["Handler"].rpartition(".")[0]
    assert f"{module}.py" in copied
    code = {p.name for p in ROUTER_DIR.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert code <= copied, "a module of the router's code would be left out of the package"
