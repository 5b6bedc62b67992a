"""The reconciler: inbox objects whose notification never came (or whose message was lost after a crash) are
found after the grace period, sent through the inbox queue as S3 would have sent them, and routed by the real
router into exactly one sorted copy and one results item, leaving the inbox empty.
"""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

import pytest

from breedfilter import reconcile_cli
from breedfilter.template import StackTemplate
from breedfilter.twin import reconciler as twin_reconciler
from breedfilter.twin.lambda_runtime import LambdaContext, load_handler
from breedfilter.units import REPO_ROOT
from routing.events import parse_sqs_body
from routing.pipeline import Router
from routing.reconcile import (
    ENV_VARIABLES,
    LEFTOVER,
    LOST,
    InboxVersion,
    Reconciler,
    ReconcileSettings,
    s3_notification,
)
from routing.settings import ConfigError
from tests.images import image_bytes
from tests.support import assert_routed_once, lose_notifications, queued_bodies

LATER = timedelta(minutes=16)  # past the default grace period of 15 minutes


def settings_for(harness, **changes) -> ReconcileSettings:
    names = harness.stack.names
    values = {
        "inbox_bucket": names.inbox_bucket,
        "inbox_queue_url": harness.stack.queue_url,
        "results_table": names.results_table,
        **changes,
    }
    return ReconcileSettings(**values)


def reconciler(harness, **changes) -> Reconciler:
    return Reconciler(settings_for(harness, **changes), s3=harness.s3, sqs=harness.sqs, dynamodb=harness.dynamodb)


# -- the notification ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version_id", ["3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH", None], ids=["versioned", "unversioned"])
def test_notification_is_what_s3_sends_and_the_router_reads_it_unchanged(version_id):
    written = datetime(2025, 11, 21, 14, 3, 27, 512_000, tzinfo=UTC)
    version = InboxVersion(
        bucket="breedfilter-inbox-1",
        key="uploads/phone photo+1 é.jpg",
        version_id=version_id,
        etag="0a8f3c2d9e7b41f6a5c3d2e1f0b9a887",
        size=48213,
        last_modified=written,
    )
    payload = s3_notification(version, region="eu-west-1", detail={"reason": LOST})
    (record,) = payload["Records"]
    assert record["eventVersion"] == "2.1" and record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put" and record["awsRegion"] == "eu-west-1"
    assert record["eventTime"] == "2025-11-21T14:03:27.512Z"
    assert record["s3"]["bucket"] == {"name": "breedfilter-inbox-1", "arn": "arn:aws:s3:::breedfilter-inbox-1"}
    obj = record["s3"]["object"]
    assert obj["key"] == quote_plus("uploads/phone photo+1 é.jpg") == "uploads%2Fphone+photo%2B1+%C3%A9.jpg"
    assert obj["size"] == 48213 and obj["eTag"] == version.etag and obj["sequencer"]
    assert ("versionId" in obj) == (version_id is not None)
    assert payload["breedfilter"]["origin"] == "reconciler" and payload["breedfilter"]["reason"] == LOST

    (source,) = parse_sqs_body(json.dumps(payload))  # the router's own parser, the marker ignored
    assert source == version.source
    assert source.key == "uploads/phone photo+1 é.jpg" and source.size == 48213
    assert source.event_time == "2025-11-21T14:03:27.512Z"
    revision = f"v:{version_id}" if version_id else f"e:{version.etag}"
    assert source.source_id == f"s3://breedfilter-inbox-1/uploads/phone photo+1 é.jpg#{revision}"
    marker_free = {k: v for k, v in payload.items() if k != "breedfilter"}
    assert parse_sqs_body(json.dumps(marker_free)) == [source]


def test_notification_has_the_fields_of_a_real_s3_notification(harness):
    """Shape against moto's own S3 notification for the same upload: every field it sends, we send."""
    harness.put("shape.jpg", image_bytes("red"))
    (real,) = queued_bodies(harness)
    (listed,) = harness.s3.list_object_versions(Bucket=harness.inbox)["Versions"]
    ours = s3_notification(InboxVersion.from_listing(harness.inbox, listed), region="us-east-1")
    real_record, our_record = real["Records"][0], ours["Records"][0]
    assert set(real_record) <= set(our_record)
    assert set(real_record["s3"]) <= set(our_record["s3"])
    assert set(real_record["s3"]["object"]) <= set(our_record["s3"]["object"])
    ((theirs,), (mine,)) = parse_sqs_body(json.dumps(real)), parse_sqs_body(json.dumps(ours))
    assert (mine.source_id, mine.key, mine.etag, mine.size) == (theirs.source_id, theirs.key, theirs.etag, theirs.size)


# -- lost notifications -------------------------------------------------------------------------------------


def test_lost_notification_is_found_after_the_grace_period_not_before_and_routed(harness):
    harness.put("uploads/lost dog.jpg", image_bytes("red"))
    assert lose_notifications(harness) == 1
    written = harness.s3.head_object(Bucket=harness.inbox, Key="uploads/lost dog.jpg")["LastModified"]

    early = reconciler(harness).run(now=written + timedelta(minutes=14))
    assert early.scanned == 1 and early.too_young == 1 and early.stuck == [] and early.sent == 0
    assert harness.queue_depth() == 0

    report = reconciler(harness).run(now=written + LATER)
    assert report.scanned == 1 and report.too_young == 0 and not report.truncated
    (stuck,) = report.stuck
    assert stuck.kind == LOST and stuck.sent and stuck.error is None
    assert stuck.key == "uploads/lost dog.jpg" and stuck.version_id and stuck.age_minutes >= 16
    assert report.summary()["lost"] == 1 and report.summary()["leftover"] == 0 and report.summary()["sent"] == 1
    (body,) = queued_bodies(harness)
    assert body["breedfilter"] == {"origin": "reconciler", "reason": LOST, "sent_at": report.started_at}

    routed = harness.drain()
    assert routed.succeeded == 1 and routed.failed == 0
    assert_routed_once(harness, {"uploads/lost dog.jpg": "red"})
    assert harness.item_for("uploads/lost dog.jpg")["pk"] == stuck.source_id
    assert reconciler(harness).run(now=written + LATER).stuck == []  # nothing left to find


def test_running_twice_sends_duplicates_that_converge(harness):
    harness.put("twice.jpg", image_bytes("green"))
    lose_notifications(harness)
    later = datetime.now(UTC) + LATER
    first, second = reconciler(harness).run(now=later), reconciler(harness).run(now=later)
    assert first.sent == second.sent == 1
    assert harness.queue_depth() == 2
    harness.drain()
    assert_routed_once(harness, {"twice.jpg": "green"})
    assert len(harness.model.calls) == 1  # the duplicate found the item: no second decision


def test_a_run_sends_at_most_max_objects_and_the_next_runs_take_the_rest(harness):
    colours = ["red", "green", "blue", "red", "green"]
    for i, colour in enumerate(colours):
        harness.put(f"batch/{i}.jpg", image_bytes(colour))
    lose_notifications(harness)
    runs = []
    while True:
        report = reconciler(harness, max_objects=2).run(now=datetime.now(UTC) + LATER)
        runs.append((len(report.stuck), report.sent, report.truncated))
        if not report.stuck:
            break
        harness.drain()
    assert runs == [(2, 2, True), (2, 2, True), (1, 1, False), (0, 0, False)]
    assert_routed_once(harness, {f"batch/{i}.jpg": c for i, c in enumerate(colours)})


def test_leftover_after_a_crash_before_delete_is_cleaned(harness, monkeypatch):
    """Routed and recorded, then the function died before deleting, and the message was lost."""
    original = Router.delete_inbox
    crashed = []

    def crash_once(self, *args, **kwargs):
        if not crashed:
            crashed.append(True)
            raise RuntimeError("simulated crash before delete")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Router, "delete_inbox", crash_once)
    harness.put("crashed.jpg", image_bytes("blue"))
    assert harness.source.poll_once().failed == 1 and crashed
    lose_notifications(harness)  # the redelivery never comes
    assert harness.keys(harness.inbox) == ["crashed.jpg"] and len(harness.items()) == 1

    report = reconciler(harness).run(now=datetime.now(UTC) + LATER)
    (stuck,) = report.stuck
    assert stuck.kind == LEFTOVER and stuck.sent and report.lost == []
    harness.drain()
    assert_routed_once(harness, {"crashed.jpg": "blue"})
    assert len(harness.model.calls) == 1


def test_unversioned_inbox_is_keyed_on_the_etag(make_harness):
    harness = make_harness(versioned_inbox=False)
    harness.put("plain/one.jpg", image_bytes("red"))
    lose_notifications(harness)
    (listed,) = harness.s3.list_object_versions(Bucket=harness.inbox)["Versions"]
    assert listed["VersionId"] == "null"
    report = reconciler(harness).run(now=datetime.now(UTC) + LATER)
    (stuck,) = report.stuck
    etag = listed["ETag"].strip('"')
    assert stuck.version_id is None and stuck.source_id == f"s3://{harness.inbox}/plain/one.jpg#e:{etag}"
    (body,) = queued_bodies(harness)
    assert "versionId" not in body["Records"][0]["s3"]["object"]
    harness.drain()
    assert harness.item_for("plain/one.jpg")["pk"] == stuck.source_id
    assert harness.keys(harness.sorted) == ["red/plain/one.jpg"] and harness.keys(harness.inbox) == []


def test_folder_markers_and_delete_markers_are_skipped(harness):
    harness.put("folder/", b"")
    harness.put("hidden.jpg", image_bytes("green"))
    harness.s3.delete_object(Bucket=harness.inbox, Key="hidden.jpg")  # a marker over an unrouted version
    lose_notifications(harness)
    report = reconciler(harness).run(now=datetime.now(UTC) + LATER)
    assert report.folder_markers == 1 and report.delete_markers == 1
    # the version behind the marker was uploaded and never routed: the router would have routed it too
    assert [s.key for s in report.stuck] == ["hidden.jpg"]
    harness.drain()
    assert harness.keys(harness.sorted) == ["green/hidden.jpg"]
    assert [v["Key"] for v in harness.s3.list_object_versions(Bucket=harness.inbox).get("Versions", [])] == ["folder/"]


def test_dry_run_reports_and_sends_nothing(harness):
    harness.put("dry.jpg", image_bytes("red"))
    lose_notifications(harness)
    report = reconciler(harness).run(dry_run=True, now=datetime.now(UTC) + LATER)
    assert len(report.stuck) == 1 and report.sent == 0 and report.dry_run
    assert harness.queue_depth() == 0 and harness.keys(harness.inbox) == ["dry.jpg"]


def test_out_of_time_stops_listing_and_says_truncated(harness):
    harness.put("a.jpg", image_bytes("red"))
    lose_notifications(harness)
    report = reconciler(harness).run(now=datetime.now(UTC) + LATER, should_stop=lambda: True)
    assert report.truncated and report.stopped_early == "out of time" and report.sent == 1


def test_listing_is_paginated(harness):
    """More versions than one ListObjectVersions page (1000 by default; 2 here)."""
    for i in range(5):
        harness.put(f"p/{i}.jpg", image_bytes("red"))
    lose_notifications(harness)

    class SmallPages:
        """The S3 client, listing 2 versions a page."""

        pages = 0

        def __getattr__(self, name):
            return getattr(harness.s3, name)

        def get_paginator(self, name):
            real = harness.s3.get_paginator(name)
            outer = self

            class Paginator:
                def paginate(self, **params):
                    for page in real.paginate(**params, PaginationConfig={"PageSize": 2}):
                        outer.pages += 1
                        yield page

            return Paginator()

    small = SmallPages()
    report = Reconciler(settings_for(harness), s3=small, sqs=harness.sqs, dynamodb=harness.dynamodb).run(
        dry_run=True, now=datetime.now(UTC) + LATER
    )
    assert small.pages >= 3
    assert sorted(s.key for s in report.stuck) == [f"p/{i}.jpg" for i in range(5)]


# -- settings and the Lambda --------------------------------------------------------------------------------


def reconciler_env(harness, **extra) -> dict[str, str]:
    return {
        "INBOX_BUCKET": harness.inbox,
        "INBOX_QUEUE_URL": harness.stack.queue_url,
        "RESULTS_TABLE": harness.stack.names.results_table,
        **extra,
    }


def test_settings_defaults_and_config_errors():
    env = {"INBOX_BUCKET": "b", "INBOX_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/q", "RESULTS_TABLE": "t"}
    settings = ReconcileSettings.from_env(env)
    assert settings.grace_minutes == 15 and settings.max_objects == 1000
    with pytest.raises(ConfigError, match="INBOX_QUEUE_URL"):
        ReconcileSettings.from_env({**env, "INBOX_QUEUE_URL": " "})
    with pytest.raises(ConfigError, match="RECONCILE_MAX_OBJECTS='many'"):
        ReconcileSettings.from_env({**env, "RECONCILE_MAX_OBJECTS": "many"})
    with pytest.raises(ConfigError, match="RECONCILE_MAX_OBJECTS must be within"):
        ReconcileSettings.from_env({**env, "RECONCILE_MAX_OBJECTS": "0"})
    with pytest.raises(ConfigError, match="RECONCILE_GRACE_MINUTES"):
        ReconcileSettings.from_env({**env, "RECONCILE_GRACE_MINUTES": "-1"})
    with pytest.raises(ConfigError, match="queue's URL"):
        ReconcileSettings.from_env({**env, "INBOX_QUEUE_URL": "breedfilter-inbox"})


def test_lambda_handler_reconciles_and_publishes_metrics(harness, monkeypatch, capsys):
    for key, value in reconciler_env(harness, RECONCILE_GRACE_MINUTES="0").items():
        monkeypatch.setenv(key, value)
    handler = load_handler("functions/router", "reconcile_app.lambda_handler")
    harness.put("scheduled.jpg", image_bytes("red"))
    lose_notifications(harness)

    dry = handler({"dry_run": True}, LambdaContext(function_name="breedfilter-reconciler"))
    assert dry["stuck"] == 1 and dry["sent"] == 0 and harness.queue_depth() == 0
    capsys.readouterr()
    summary = handler({}, LambdaContext(function_name="breedfilter-reconciler"))  # what the schedule sends
    assert summary["stuck"] == 1 and summary["lost"] == 1 and summary["sent"] == 1 and not summary["truncated"]
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    published = {
        k: v
        for blob in blobs
        for k, v in blob.items()
        if k in ("StuckObjectsFound", "ReconcileSent", "LostNotifications", "LeftoverObjects")
    }
    published = {k: v[0] if isinstance(v, list) else v for k, v in published.items()}
    assert published["StuckObjectsFound"] == 1 and published["ReconcileSent"] == 1
    assert published["LostNotifications"] == 1 and published["LeftoverObjects"] == 0
    harness.drain()
    assert_routed_once(harness, {"scheduled.jpg": "red"})


def test_lambda_handler_fails_loudly_on_bad_configuration(harness, monkeypatch):
    for key, value in reconciler_env(harness).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("INBOX_BUCKET")
    handler = load_handler("functions/router", "reconcile_app.lambda_handler")
    with pytest.raises(ConfigError, match="INBOX_BUCKET"):
        handler({}, LambdaContext())
    monkeypatch.setenv("INBOX_BUCKET", harness.inbox)
    with pytest.raises(ConfigError, match="max_objects"):
        handler({"max_objects": "lots"}, LambdaContext())


# -- template.yaml ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> StackTemplate:
    return StackTemplate.load()


def reconciler_props(template: StackTemplate) -> dict:
    return template.resource("ReconcilerFunction")["Properties"]


def test_reconciler_function_shares_the_router_code_and_conventions(template):
    router = template.resource("RouterFunction")["Properties"]
    props = reconciler_props(template)
    for name in ("CodeUri", "Runtime", "Architectures", "Tracing"):
        assert props[name] == router[name], name
    module, _, function = props["Handler"].partition(".")
    assert (REPO_ROOT / router["CodeUri"] / f"{module}.py").exists() and function == "lambda_handler"
    assert props["FunctionName"] == {"Fn::Sub": "${NamePrefix}-reconciler"}
    assert props["LoggingConfig"] == {"LogGroup": {"Ref": "ReconcilerLogGroup"}}
    assert props["Timeout"] < 300  # shorter than the schedule's period: runs do not overlap


def test_reconciler_environment_sets_every_setting_and_parses(template):
    variables = reconciler_props(template)["Environment"]["Variables"]
    assert set(ENV_VARIABLES) <= set(variables)
    assert variables["INBOX_QUEUE_URL"] == {"Ref": "InboxQueue"}  # a queue's Ref is its URL
    assert variables["RECONCILE_GRACE_MINUTES"] == {"Ref": "ReconcileGraceMinutes"}
    assert variables["RECONCILE_MAX_OBJECTS"] == {"Ref": "ReconcileMaxObjects"}
    env = template.function_environment(
        "ReconcilerFunction",
        {"InboxBucket": "inbox", "InboxQueue": "https://sqs.us-east-1.amazonaws.com/1/q", "ResultsTable": "t"},
    )
    settings = ReconcileSettings.from_env(env)
    assert settings.grace_minutes == float(template.parameter_default("ReconcileGraceMinutes")) == 15
    assert settings.max_objects == int(template.parameter_default("ReconcileMaxObjects")) == 1000


def test_reconciler_runs_every_five_minutes_on_eventbridge_scheduler(template):
    events = reconciler_props(template)["Events"]
    (event,) = events.values()
    assert event["Type"] == "ScheduleV2"
    assert event["Properties"]["ScheduleExpression"] == "rate(5 minutes)"
    assert event["Properties"]["State"] == {"Ref": "ReconcileScheduleState"}
    assert twin_reconciler.schedule_interval_seconds(template) == 300.0


def test_reconciler_policies_are_least_privilege(template):
    statements = [s for policy in reconciler_props(template)["Policies"] for s in policy["Statement"]]
    granted = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            granted[action] = statement["Resource"]
    assert granted == {
        "s3:ListBucketVersions": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${InboxBucket}"},
        "sqs:SendMessage": {"Fn::GetAtt": ["InboxQueue", "Arn"]},
        "dynamodb:GetItem": {"Fn::GetAtt": ["ResultsTable", "Arn"]},
        "dynamodb:BatchGetItem": {"Fn::GetAtt": ["ResultsTable", "Arn"]},
    }


def test_deployed_reconciler_roles_as_sam_makes_them(template, monkeypatch):
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    document = copy.deepcopy(template.document)
    for function in ("RouterFunction", "ReconcilerFunction"):
        document["Resources"][function]["Properties"]["CodeUri"] = "s3://bucket/router.zip"
    resources = transform(document, {}, NoManagedPolicies())["Resources"]
    role = resources["ReconcilerFunctionRole"]["Properties"]
    managed = {arn.rsplit("/", 1)[-1] for arn in role.get("ManagedPolicyArns", [])}
    assert managed == {"AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}
    (schedule,) = [r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule"]
    assert schedule["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": ["ReconcilerFunction", "Arn"]}
    assert schedule["Properties"]["Name"] == {"Fn::Sub": "${NamePrefix}-reconciler"}
    scheduler_role = resources[schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    (statement,) = [s for p in scheduler_role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == {"Fn::GetAtt": ["ReconcilerFunction", "Arn"]}


# -- the command line, and the twin's hook ------------------------------------------------------------------


def test_cli_reconciles_the_twin_from_its_environment(harness, capsys):
    harness.put("cli/a b.jpg", image_bytes("red"))
    lose_notifications(harness)
    assert os.environ["AWS_ENDPOINT_URL"] == harness.aws.url  # what `eval "$(breedfilter local env)"` exports

    assert reconcile_cli.main(["--older-than", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"the local twin at {harness.aws.url}" in out and "1 stuck: 1 lost notifications" in out
    assert f"lost     s3://{harness.inbox}/cli/a b.jpg#v:" in out
    assert f"dry run: would send 1 notifications to {harness.stack.queue_url}" in out
    assert harness.queue_depth() == 0

    assert reconcile_cli.main(["--older-than", "15"]) == 0  # younger than the grace period
    assert "0 stuck" in capsys.readouterr().out and harness.queue_depth() == 0

    assert reconcile_cli.main(["--older-than", "0", "--max", "5"]) == 0
    out = capsys.readouterr().out
    assert f"sent 1 notifications (origin reconciler) to {harness.stack.queue_url}" in out
    harness.drain()
    assert_routed_once(harness, {"cli/a b.jpg": "red"})
    capsys.readouterr()  # the router's own logs and metrics

    assert reconcile_cli.main(["--older-than", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stuck"] == 0


def test_cli_without_a_stack_or_a_twin_says_what_to_do(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ENDPOINT_URL", "INBOX_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BREEDFILTER_LOCAL_DIR", str(tmp_path))
    assert reconcile_cli.main([]) == 2
    assert "pass --stack NAME" in capsys.readouterr().err


def test_the_twin_can_run_the_reconciler_on_its_schedule(harness):
    runner = twin_reconciler.twin_reconciler(harness.stack, harness.aws.client)
    assert runner.settings.inbox_queue_url == harness.stack.queue_url
    assert runner.settings.grace_minutes == 15  # template.yaml's default
    harness.put("twin.jpg", image_bytes("green"))
    lose_notifications(harness)
    assert runner.run().stuck == []  # just uploaded: within the grace period
    assert len(runner.run(now=datetime.now(UTC) + LATER).stuck) == 1
    harness.drain()
    assert_routed_once(harness, {"twin.jpg": "green"})
