"""``breedfilter status``: one screen of health, read from a stack in moto (CloudFormation outputs, SQS, S3,
DynamoDB, CloudWatch), from the twin's moto server, and from a real ``breedfilter local up`` twin.

moto's CloudFormation does not create AWS::CloudWatch::Alarm resources, so the one step it cannot serve, the
stack's alarm names (status_cli.stack_alarm_names), is checked against botocore's Stubber; the alarms themselves
live in moto's CloudWatch (put_metric_alarm, set_alarm_state).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from breedfilter import cli, status_cli
from breedfilter.aws_hints import NO_CREDENTIALS
from breedfilter.twin.local_aws import free_port
from tests.images import TEXT_AS_JPG, image_bytes

ROOT = Path(__file__).resolve().parents[2]
STACK = "bf-status"
NAMES = {
    "inbox": "bf-status-inbox",
    "sorted": "bf-status-sorted",
    "queue": "bf-status-inbox-queue",
    "dlq": "bf-status-inbox-dlq",
    "table": "bf-status-results",
}
INDEX = {"Projection": {"ProjectionType": "ALL"}}
TEMPLATE = {
    "Resources": {
        "InboxBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": NAMES["inbox"]}},
        "SortedBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": NAMES["sorted"]}},
        "InboxDeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": NAMES["dlq"]}},
        "InboxQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": NAMES["queue"]}},
        "ResultsTable": {  # keys and indexes as template.yaml declares them
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": NAMES["table"],
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "label", "status", "decided_at")
                ],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": f"by-{hash_key}",
                        "KeySchema": [
                            {"AttributeName": hash_key, "KeyType": "HASH"},
                            {"AttributeName": "decided_at", "KeyType": "RANGE"},
                        ],
                        **INDEX,
                    }
                    for hash_key in ("label", "status")
                ],
            },
        },
    },
    "Outputs": {
        "InboxBucketName": {"Value": {"Ref": "InboxBucket"}},
        "SortedBucketName": {"Value": {"Ref": "SortedBucket"}},
        "InboxQueueUrl": {"Value": {"Ref": "InboxQueue"}},
        "DeadLetterQueueUrl": {"Value": {"Ref": "InboxDeadLetterQueue"}},
        "ResultsTableName": {"Value": {"Ref": "ResultsTable"}},
        "ResultsByStatusIndexName": {"Value": "by-status"},
    },
}
# status, reason, minutes ago: six decisions in the last hour, three before it
DECISIONS = [
    ("SORTED", None, 1),
    ("SORTED", None, 5),
    ("SORTED", None, 59),
    ("REVIEW", "unknown_label", 10),
    ("REVIEW", "below_threshold", 20),
    ("REJECTED", "not_an_image", 30),
    ("SORTED", None, 61),
    ("SORTED", None, 120),
    ("REVIEW", "unknown_label", 150),
]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def stack(moto_s3):
    """A stack in moto: its outputs name the buckets, queues and table; all of them hold something."""
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(TEMPLATE))
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
    }
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue, dlq = outputs["InboxQueueUrl"], outputs["DeadLetterQueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=queue, MessageBody=f'{{"n": {n}}}')
    sqs.send_message(QueueUrl=queue, MessageBody='{"n": "later"}', DelaySeconds=600)
    sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, VisibilityTimeout=600)  # one in flight
    for n in range(2):
        sqs.send_message(QueueUrl=dlq, MessageBody=f'{{"dead": {n}}}')
    moto_s3.put_object(Bucket=NAMES["inbox"], Key="waiting/old.jpg", Body=image_bytes("red"))
    time.sleep(1.1)  # S3 keeps LastModified to the second
    moto_s3.put_object(Bucket=NAMES["inbox"], Key="a-new.jpg", Body=image_bytes("blue"))
    moto_s3.put_object(Bucket=NAMES["inbox"], Key="folder/", Body=b"")  # a folder marker: no upload
    now = datetime.now(UTC)
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    for n, (status, reason, minutes) in enumerate(DECISIONS):
        item = {"pk": {"S": f"s3://{NAMES['inbox']}/k{n}.jpg#e:{n}"}, "status": {"S": status}}
        item["decided_at"] = {"S": iso(now - timedelta(minutes=minutes))}
        if reason:
            item["reason"] = {"S": reason}
        if status == "SORTED":
            item["label"] = {"S": "Beagle"}
        dynamodb.put_item(TableName=NAMES["table"], Item=item)
    return outputs


@pytest.fixture
def alarms():
    """Three of the stack's alarms in CloudWatch: one firing, one OK, one without data; and the stack's list."""
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    for name in ("bf-router-errors", "bf-dlq-not-empty", "bf-endpoint-latency"):
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            Namespace="AWS/SQS",
            MetricName="ApproximateNumberOfMessagesVisible",
            Statistic="Maximum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
        )
    cloudwatch.set_alarm_state(AlarmName="bf-dlq-not-empty", StateValue="ALARM", StateReason="Threshold Crossed: 2")
    cloudwatch.set_alarm_state(AlarmName="bf-router-errors", StateValue="OK", StateReason="Threshold not crossed")
    cloudwatch.set_alarm_state(AlarmName="bf-endpoint-latency", StateValue="INSUFFICIENT_DATA", StateReason="no data")
    return ["bf-router-errors", "bf-dlq-not-empty", "bf-endpoint-latency"]


def age_datapoints(queue_url: str, *points: tuple[float, float]) -> None:
    """ApproximateAgeOfOldestMessage datapoints: (minutes ago, seconds), as SQS publishes them."""
    now = datetime.now(UTC)
    boto3.client("cloudwatch", region_name="us-east-1").put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": queue_url.rsplit("/", 1)[1]}],
                "Timestamp": now - timedelta(minutes=ago),
                "Value": seconds,
            }
            for ago, seconds in points
        ],
    )


def stack_target():
    return status_cli.find_target(STACK, "us-east-1")


# -- the pieces ---------------------------------------------------------------------------------------------------


def test_the_stacks_alarm_names_are_its_alarm_resources_physical_ids():
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    summary = {"LastUpdatedTimestamp": datetime.now(UTC), "ResourceStatus": "CREATE_COMPLETE"}
    with Stubber(cloudformation) as stub:
        stub.add_response(
            "list_stack_resources",
            {
                "StackResourceSummaries": [
                    {"LogicalResourceId": "DlqAlarm", "PhysicalResourceId": "bf-dlq-not-empty",
                     "ResourceType": "AWS::CloudWatch::Alarm", **summary},
                    {"LogicalResourceId": "InboxQueue", "PhysicalResourceId": "https://sqs/1/q",
                     "ResourceType": "AWS::SQS::Queue", **summary},
                ],
                "NextToken": "page-2",
            },
            {"StackName": STACK},
        )  # fmt: skip
        stub.add_response(
            "list_stack_resources",
            {
                "StackResourceSummaries": [
                    {"LogicalResourceId": "Drift", "PhysicalResourceId": "bf-review-share",
                     "ResourceType": "AWS::CloudWatch::Alarm", **summary},
                    {"LogicalResourceId": "Any", "PhysicalResourceId": "bf-any",
                     "ResourceType": "AWS::CloudWatch::CompositeAlarm", **summary},
                    {"LogicalResourceId": "Topic", "PhysicalResourceId": "arn:aws:sns:us-east-1:1:t",
                     "ResourceType": "AWS::SNS::Topic", **summary},
                ]
            },
            {"StackName": STACK, "NextToken": "page-2"},
        )  # fmt: skip
        assert status_cli.stack_alarm_names(cloudformation, STACK) == ["bf-dlq-not-empty", "bf-review-share", "bf-any"]
        stub.assert_no_pending_responses()


def test_alarm_states_come_alarm_first_and_unknown_names_are_said(moto_s3, alarms):
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    found, missing = status_cli.alarm_states(cloudwatch, [*alarms, "bf-deleted-by-hand"])
    assert [(a.name, a.state) for a in found] == [
        ("bf-dlq-not-empty", "ALARM"),
        ("bf-endpoint-latency", "INSUFFICIENT_DATA"),
        ("bf-router-errors", "OK"),
    ]
    assert found[0].reason == "Threshold Crossed: 2" and found[0].updated_at.endswith("Z")
    assert missing == ["bf-deleted-by-hand"]


def test_the_inbox_listing_stops_at_its_cap_and_says_so(moto_s3):
    moto_s3.create_bucket(Bucket="capped")
    for n in range(5):
        moto_s3.put_object(Bucket="capped", Key=f"k{n}.jpg", Body=b"x")
    now = datetime.now(UTC)
    capped = status_cli.inbox_waiting(moto_s3, "capped", now, cap=3)
    assert (capped.waiting, capped.capped, capped.cap) == (3, True, 3)
    whole = status_cli.inbox_waiting(moto_s3, "capped", now, cap=5)
    assert (whole.waiting, whole.capped) == (5, False)
    empty = status_cli.inbox_waiting(moto_s3, "capped", now, cap=0)
    assert (empty.waiting, empty.capped, empty.oldest_key) == (0, True, None)


# -- a deployed stack (moto) --------------------------------------------------------------------------------------


def test_a_stack_reads_depths_ages_counts_and_its_alarms(stack, alarms, monkeypatch):
    monkeypatch.setattr(status_cli, "stack_alarm_names", lambda cloudformation, name: alarms if name == STACK else [])
    age_datapoints(stack["InboxQueueUrl"], (6, 40.0), (2, 75.0), (30, 9999.0))  # 30 min ago: outside the window
    health = status_cli.gather(stack_target(), STACK, 60)

    assert health.where == f"stack {STACK}" and not health.local
    assert [(a.name, a.state) for a in health.alarms.alarms] == [
        ("bf-dlq-not-empty", "ALARM"),
        ("bf-endpoint-latency", "INSUFFICIENT_DATA"),
        ("bf-router-errors", "OK"),
    ]
    queue, dlq = health.inbox_queue, health.dead_letter_queue
    assert (queue.url, queue.visible, queue.in_flight, queue.delayed) == (stack["InboxQueueUrl"], 2, 1, 1)
    assert (dlq.url, dlq.total, dlq.visible) == (stack["DeadLetterQueueUrl"], 2, 2)
    assert health.oldest_message.age_seconds == 75.0 and health.oldest_message.metric
    assert (health.inbox.waiting, health.inbox.oldest_key, health.inbox.capped) == (2, "waiting/old.jpg", False)
    assert 1 <= health.inbox.oldest_age_seconds < 60
    found = health.decisions
    assert found.per_status == {"SORTED": 3, "REVIEW": 2, "REJECTED": 1}
    assert (found.total, found.unknown, found.index) == (6, 1, "by-status")
    assert found.review_share == pytest.approx(2 / 6) and found.unknown_share == pytest.approx(1 / 6)
    assert health.verdict == "ATTENTION"
    assert health.attention == [
        "1 alarm(s) in ALARM: bf-dlq-not-empty",
        "2 message(s) in the dead-letter queue (fix the cause, then `breedfilter redrive`)",
    ]

    text = status_cli.render(health)
    lines = text.splitlines()
    assert lines[0].startswith(f"breedfilter status of stack {STACK} at ")
    assert lines[1] == "alarms: 1 of 3 in ALARM"
    assert lines[2] == "  ALARM             bf-dlq-not-empty: Threshold Crossed: 2"
    assert lines[4] == "  OK                bf-router-errors: Threshold not crossed"
    assert f"inbox queue {stack['InboxQueueUrl']}: 4 messages (2 visible, 1 in flight, 1 delayed)" in lines
    assert f"dead-letter queue {stack['DeadLetterQueueUrl']}: 2 messages (2 visible, 0 in flight, 0 delayed)" in lines
    assert any(line.startswith("oldest inbox message: 75 s (ApproximateAgeOfOldestMessage at ") for line in lines)
    assert f"inbox bucket s3://{NAMES['inbox']}/: 2 objects waiting, the oldest waiting/old.jpg for " in text
    assert "6 decisions: SORTED 3, REVIEW 2, REJECTED 1\n  review share 33.3%, unknown share 16.7% (1 REVIEW" in text
    assert lines[-1].startswith("ATTENTION: 1 alarm(s) in ALARM: bf-dlq-not-empty; 2 message(s) in the dead-letter")

    # nothing was received: the dead-lettered messages keep their receive counts
    sqs = boto3.client("sqs", region_name="us-east-1")
    received = sqs.receive_message(
        QueueUrl=stack["DeadLetterQueueUrl"], MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in received] == ["1", "1"]


def test_a_wider_window_counts_more_and_old_waits_need_attention(stack):
    later = datetime.now(UTC) + timedelta(minutes=40)  # the inbox objects have waited 40 minutes by then
    health = status_cli.gather(stack_target(), STACK, 240, now=later)
    assert health.decisions.per_status == {"SORTED": 5, "REVIEW": 3, "REJECTED": 1}  # all nine
    assert health.decisions.unknown == 2
    assert health.alarms.read and health.alarms.note == f"stack {STACK} declares no CloudWatch alarms"
    assert health.oldest_message.age_seconds is None
    assert health.oldest_message.note == "no datapoint in the last 10 min"
    assert health.stuck_after_minutes == 15
    assert health.attention[-1].startswith(f"s3://{NAMES['inbox']}/waiting/old.jpg has waited 40.0 min in the inbox")
    assert "`breedfilter reconcile --dry-run`" in health.attention[-1]
    assert "oldest inbox message: no datapoint in the last 10 min" in status_cli.render(health)


def test_an_old_message_needs_attention(stack):
    age_datapoints(stack["InboxQueueUrl"], (1, 1200.0))
    health = status_cli.gather(stack_target(), STACK, 60)
    assert "the oldest inbox message is 20.0 min old (is the router running, or failing?)" in health.attention


def test_all_well_is_ok(stack):
    sqs = boto3.client("sqs", region_name="us-east-1")
    sqs.purge_queue(QueueUrl=stack["DeadLetterQueueUrl"])
    health = status_cli.gather(stack_target(), STACK, 60)
    assert (health.verdict, health.attention) == ("OK", [])
    assert status_cli.render(health).splitlines()[-1] == "OK"


def test_the_command_prints_the_same_report_as_json(stack, capsys):
    assert cli.main(["status", "--stack", STACK, "--region", "us-east-1", "--since", "90", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {
        "where", "local", "checked_at", "verdict", "attention", "alarms", "inbox_queue", "dead_letter_queue",
        "oldest_message", "inbox", "decisions", "stuck_after_minutes",
    }  # fmt: skip
    assert report["where"] == f"stack {STACK}" and report["local"] is False and report["verdict"] == "ATTENTION"
    assert report["decisions"]["since_minutes"] == 90
    assert report["decisions"]["per_status"] == {"SORTED": 4, "REVIEW": 2, "REJECTED": 1}
    assert report["inbox_queue"] == {"url": stack["InboxQueueUrl"], "visible": 2, "in_flight": 1, "delayed": 1}
    assert report["dead_letter_queue"]["visible"] == 2
    assert report["inbox"]["oldest_key"] == "waiting/old.jpg" and report["inbox"]["waiting"] == 2
    assert report["alarms"] == {
        "read": True, "note": f"stack {STACK} declares no CloudWatch alarms", "alarms": [], "missing": []
    }  # fmt: skip

    assert cli.main(["status", "--stack", STACK, "--region", "us-east-1"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith(f"breedfilter status of stack {STACK}")
    assert "last 60 min (since " in text and "7 decisions" not in text and "6 decisions" in text


# -- errors: one line, a non-zero exit ----------------------------------------------------------------------------


def test_a_missing_stack_is_one_line(moto_s3, capsys):
    assert status_cli.main(["--stack", "no-such-stack", "--region", "us-east-1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("status: stack no-such-stack: ValidationError: Stack with id no-such-stack")
    assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.usefixtures("no_credentials")
@pytest.mark.parametrize("where", [["--stack", STACK, "--region", "us-east-1"], []])
def test_no_credentials_is_one_line(capsys, where):
    assert status_cli.main(where) == 1
    assert capsys.readouterr().err == f"status: {NO_CREDENTIALS}\n"


def test_no_stack_and_no_twin_says_what_to_do(tmp_path, monkeypatch, capsys):
    for name in ("AWS_ENDPOINT_URL", "INBOX_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BREEDFILTER_LOCAL_DIR", str(tmp_path))
    assert status_cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("status: no stack to work on: pass --stack NAME") and len(err.splitlines()) == 1


def test_an_unreachable_twin_is_one_line(monkeypatch, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    assert status_cli.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"status: the local twin at {url} does not answer (Could not connect to the endpoint URL")
    assert err.rstrip().endswith("`breedfilter local up` starts one") and len(err.splitlines()) == 1


def test_since_must_be_minutes_above_zero(capsys):
    with pytest.raises(SystemExit) as exited:
        status_cli.main(["--since", "0"])
    assert exited.value.code == 2 and "--since takes minutes above 0" in capsys.readouterr().err


# -- the twin -----------------------------------------------------------------------------------------------------


def test_the_twins_moto_server_after_routing(harness, capsys):
    harness.put("in/red.jpg", image_bytes("red"))
    harness.put("in/grey.jpg", image_bytes("grey"))
    harness.put("in/note.jpg", TEXT_AS_JPG)
    harness.drain()
    harness.put("in/later.jpg", image_bytes("blue"))  # not routed yet: waits in the inbox, its message queued
    harness.sqs.send_message(QueueUrl=harness.stack.dlq_url, MessageBody="{}")
    capsys.readouterr()

    assert status_cli.main([]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"breedfilter status of the local twin at {harness.aws.url} at ")
    assert lines[1] == "alarms: none on the local twin: CloudWatch alarms exist only in a deployed stack"
    assert f"inbox queue {harness.stack.queue_url}: 1 message (1 visible, 0 in flight, 0 delayed)" in lines
    assert f"dead-letter queue {harness.stack.dlq_url}: 1 message (1 visible, 0 in flight, 0 delayed)" in lines
    assert "oldest inbox message: no SQS metrics on the local twin (the inbox bucket's oldest object is)" in lines
    assert f"inbox bucket s3://{harness.inbox}/: 1 object waiting, the oldest in/later.jpg for " in out
    assert "3 decisions: SORTED 1, REVIEW 1, REJECTED 1\n  review share 33.3%, unknown share 33.3% (1 REVIEW" in out
    assert lines[-1].startswith("ATTENTION: 1 message(s) in the dead-letter queue")


def breedfilter_local(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "breedfilter.local_cli", "--state-dir", str(state_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)


@pytest.fixture
def twin_dir(tmp_path: Path):
    yield tmp_path
    breedfilter_local(tmp_path, "down")  # never leave a twin behind, even when the test fails


def test_status_on_a_running_twin_after_an_image_was_routed(twin_dir, trained_artifact, monkeypatch, capsys):
    """``breedfilter local up`` in the background; status finds it by its state file, as reconcile does."""
    started = breedfilter_local(twin_dir, "up", "--model", str(trained_artifact))
    assert started.returncode == 0, started.stderr + started.stdout
    state = json.loads((twin_dir / "twin.json").read_text())
    exports = state["exports"]
    for name in ("AWS_ENDPOINT_URL", "INBOX_BUCKET", "RESULTS_TABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BREEDFILTER_LOCAL_DIR", str(twin_dir))
    session = boto3.Session(
        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        region_name=exports["AWS_DEFAULT_REGION"],
    )
    s3 = session.client("s3", endpoint_url=exports["AWS_ENDPOINT_URL"])
    dynamodb = session.client("dynamodb", endpoint_url=exports["AWS_ENDPOINT_URL"])
    s3.put_object(Bucket=exports["INBOX_BUCKET"], Key="dogs/rex.jpg", Body=image_bytes("red"))
    while not dynamodb.scan(TableName=exports["RESULTS_TABLE"], Select="COUNT")["Count"]:
        time.sleep(0.2)  # the twin routes live
    while s3.list_objects_v2(Bucket=exports["INBOX_BUCKET"]).get("KeyCount"):
        time.sleep(0.2)  # recorded, then deleted from the inbox

    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"breedfilter status of the local twin at {exports['AWS_ENDPOINT_URL']} (pid {state['pid']})" in out
    assert "alarms: none on the local twin" in out
    assert ": 0 messages (0 visible, 0 in flight, 0 delayed)" in out
    assert f"inbox bucket s3://{exports['INBOX_BUCKET']}/: 0 objects waiting" in out
    assert ": 1 decision: " in out and out.splitlines()[-1] == "OK"

    assert cli.main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["local"] is True and report["decisions"]["total"] == 1 and report["verdict"] == "OK"
    assert report["inbox_queue"]["visible"] == 0 and report["dead_letter_queue"]["visible"] == 0
