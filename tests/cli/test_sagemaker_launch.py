"""`breedfilter train` / `breedfilter tune` build the SageMaker jobs we mean: the exact CreateTrainingJob and
CreateHyperParameterTuningJob requests, captured as botocore sends them to moto (nothing reaches AWS).

Offline, the SDK needs SAGEMAKER_VALIDATE_ROLE=false (role validation calls IAM), an output config (or it
creates a default bucket) and telemetry off (it would GET an S3 URL on every job): measured, see the tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import optuna
import pytest
import yaml
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from breedfilter import cli, metrics, sagemaker_jobs, search_space, tune_local, units
from breedfilter.template import TEMPLATE_PATH
from breedfilter.twin.local_aws import FAKE_CREDENTIALS
from tests.image_datasets import make_dataset

BUCKET = "breedfilter-ml-123456789012"
DATA = f"s3://{BUCKET}/datasets/dogs"
ROLE = "arn:aws:iam::123456789012:role/BreedfilterSageMaker"
REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto for every AWS call, and a record of each SageMaker request the launcher sends."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": REGION, "SAGEMAKER_VALIDATE_ROLE": "false"}.items():
        monkeypatch.setenv(name, value)
    captured: dict[str, Any] = {"requests": {}, "telemetry": []}
    original = sagemaker_jobs.sagemaker_session

    def session_with_capture(region: str | None, output: str) -> Any:
        session = original(region, output)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            captured["requests"][model.name] = json.loads(params["body"]) if params["body"] else {}

        session.boto_session.events.register("before-call.sagemaker", record)
        return session

    monkeypatch.setattr(sagemaker_jobs, "sagemaker_session", session_with_capture)
    import sagemaker.core.telemetry.telemetry_logging as telemetry

    monkeypatch.setattr(telemetry, "_requests_helper", lambda url, timeout: captured["telemetry"].append(url))
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        for split in ("train", "valid", "test"):
            s3.put_object(Bucket=BUCKET, Key=f"datasets/dogs/{split}/001.Beagle/1.jpg", Body=b"\xff\xd8 a jpeg")
        yield captured


def launch(command: str, *argv: str) -> int:
    return cli.main([command, "--data", DATA, "--role", ROLE, *argv])


def test_a_training_job_request_carries_everything_train_py_needs(aws: dict, tmp_path: Path, capsys: Any) -> None:
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"lr": 0.0123, "batch_size": 64, "label_smoothing": 0.05}))
    code = launch(
        "train",
        "--instance-type",
        "ml.g5.2xlarge",
        "--instance-count",
        "2",
        "--spot",
        "--max-runtime-hours",
        "2",
        "--hyperparameters",
        str(best),
        "--model",
        "timm/tf_efficientnet_lite0",
        "--epochs=12",
        "--lr",
        "0.02",  # the command line wins over the file
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    request = aws["requests"]["CreateTrainingJob"]
    name = request["TrainingJobName"]
    assert re.fullmatch(r"breedfilter-\d{14}", name)
    assert request["HyperParameters"] == {
        "lr": "0.02",
        "batch_size": "64",
        "label_smoothing": "0.05",
        "model": "timm/tf_efficientnet_lite0",
        "epochs": "12",
    }
    spec = request["AlgorithmSpecification"]
    assert spec["TrainingImage"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.10.0-gpu-py313"
    assert spec["MetricDefinitions"] == metrics.definitions()
    assert request["RoleArn"] == ROLE
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 172800}
    assert request["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/breedfilter/checkpoints/breedfilter-")
    assert request["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/breedfilter/jobs"}
    assert request["TensorBoardOutputConfig"] == {
        "S3OutputPath": f"s3://{BUCKET}/breedfilter/tensorboard",
        "LocalPath": "/opt/ml/output/tensorboard",
    }
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["data"] == DATA + "/"  # SM_CHANNEL_DATA: train/ valid/ test/ under it
    assert {"Key": "project", "Value": "breedfilter"} in request["Tags"]
    # The code channel holds training/ as uploaded (train.py, the modules it imports, requirements.txt) ...
    assert channels["code"].startswith(f"s3://{BUCKET}/breedfilter/")  # under --output, for a scoped IAM policy
    code_prefix = channels["code"].split(f"s3://{BUCKET}/", 1)[1]
    keys = {o["Key"].rsplit("/", 1)[1] for o in _objects(code_prefix)}
    assert {"train.py", "options.py", "trainer.py", "tensorboard_log.py", "inference.py", "requirements.txt"} <= keys
    # ... and the SDK's torchrun driver starts one process per GPU on each instance.
    drivers = channels["sm_drivers"].split(f"s3://{BUCKET}/", 1)[1]
    distributed = _read(f"{drivers}/distributed.json")
    assert json.loads(distributed)["smp"] is None and "torchrun" in _read(f"{drivers}/sm_train.sh")
    # The request really reached (moto's) SageMaker.
    described = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName=name)
    assert described["HyperParameters"]["epochs"] == "12"
    assert not aws["telemetry"]  # SDK telemetry stays off

    artifact = f"s3://{BUCKET}/breedfilter/jobs/{name}/output/model.tar.gz"
    assert f"started SageMaker training job {name} (us-east-1)" in printed
    assert (
        f"console:     https://us-east-1.console.aws.amazon.com/sagemaker/home?region=us-east-1#/jobs/{name}" in printed
    )
    assert f"artifact:    {artifact}" in printed
    deploy = next(line.strip() for line in printed.splitlines() if line.strip().startswith("sam deploy"))
    overrides = dict(item.split("=", 1) for item in deploy.removeprefix("sam deploy --parameter-overrides ").split())
    assert overrides["ModelDataUrl"] == artifact
    # The line passes the template's own parameter checks.
    parameters = _template_parameters()
    assert set(overrides) <= set(parameters)
    for key, value in overrides.items():
        pattern = parameters[key].get("AllowedPattern")
        assert pattern is None or re.fullmatch(pattern, value), (key, value)
    assert overrides["InferenceImageUri"].endswith("/ray:serve-ml-sagemaker-cpu-v1.4")  # the maintained container


def test_the_tuning_request_searches_exactly_what_the_local_tuner_samples(
    aws: dict, tmp_path: Path, capsys: Any
) -> None:
    code = launch(
        "tune", "--max-jobs", "12", "--max-parallel", "3", "--model", "timm/tf_efficientnet_lite0", "--epochs", "5"
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    request = aws["requests"]["CreateHyperParameterTuningJob"]
    config = request["HyperParameterTuningJobConfig"]
    sent = search_space.from_sagemaker(config["ParameterRanges"])
    # A local study with the same flags, one tiny trial: the distributions Optuna sampled from.
    data = make_dataset(tmp_path / "data", {"train": 4, "valid": 2, "test": 2}, size=32)
    tiny = ["--weights", "none", "--image-size", "32", "--num-workers", "0", "--max-steps-per-epoch", "1"]
    local = [
        "--data",
        str(data),
        "--out",
        str(tmp_path / "tune"),
        "--study",
        "s",
        "--trials",
        "1",
        "--mode",
        "inprocess",
    ]
    assert tune_local.main([*local, "--model", "timm/test_efficientnet", "--epochs", "1", *tiny]) == 0
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune' / 's' / 'study.db'}")
    assert sent == search_space.from_optuna(study.trials[0].distributions) == search_space.load().canonical()
    assert config["ParameterRanges"]["ContinuousParameterRanges"][0] == {
        "Name": "lr",
        "MinValue": "0.001",
        "MaxValue": "0.1",
        "ScalingType": "Logarithmic",
    }
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "best_valid_accuracy"}
    assert config["ResourceLimits"] == {"MaxParallelTrainingJobs": 3, "MaxNumberOfTrainingJobs": 12}
    assert config["Strategy"] == "Bayesian" and config["TrainingJobEarlyStoppingType"] == "Auto"
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == metrics.definitions()
    static = definition["StaticHyperParameters"]
    assert {k: static[k] for k in ("model", "epochs")} == {"model": "timm/tf_efficientnet_lite0", "epochs": "5"}
    assert static["sagemaker_program"] == "train.py"
    assert "CheckpointConfig" not in definition
    name = request["HyperParameterTuningJobName"]
    assert len(name) <= 32 and name.startswith("bf-tune-")
    assert boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name
    )["HyperParameterTuningJobStatus"]
    assert f"started SageMaker tuning job {name}" in printed and "#/hyper-tuning-jobs/" + name in printed
    assert f"breedfilter tune --best {name}" in printed
    assert not aws["telemetry"]


def test_the_best_trial_of_a_finished_tuning_job_becomes_a_flags_file(aws: dict, tmp_path: Path, capsys: Any) -> None:
    """moto runs no trials, so SageMaker's answers about the finished job are given here as SageMaker words them."""
    client = boto3.client("sagemaker", region_name=REGION)
    trial = "bf-tune-261122-013000-007-1a2b3c4d"
    artifact = f"s3://{BUCKET}/breedfilter/jobs/{trial}/output/model.tar.gz"
    answers = {
        "DescribeHyperParameterTuningJob": {
            "HyperParameterTuningJobName": "bf-tune-261122-013000",
            "HyperParameterTuningJobStatus": "Completed",
            "TrainingJobStatusCounters": {"Completed": 18, "InProgress": 0, "Stopped": 2},
            "BestTrainingJob": {
                "TrainingJobName": trial,
                "TunedHyperParameters": {"lr": "0.0123", "batch_size": '"64"', "unfreeze_epoch": "2"},
                "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "best_valid_accuracy", "Value": 0.97},
            },
        },
        "DescribeTrainingJob": {"TrainingJobName": trial, "ModelArtifacts": {"S3ModelArtifacts": artifact}},
    }
    client.meta.events.register(
        "before-call.sagemaker.*",
        lambda model, **_: (AWSResponse("", 200, {}, None), answers[model.name]) if model.name in answers else None,
    )
    out = tmp_path / "best.json"
    text = sagemaker_jobs.best_of_tuning_job("bf-tune-261122-013000", REGION, out, client=client)
    assert json.loads(out.read_text()) == {"lr": 0.0123, "batch_size": 64, "unfreeze_epoch": 2}
    assert f"best: {trial}, best_valid_accuracy=0.97" in text and f"ModelDataUrl={artifact}" in text
    # The file is what train.py and the launcher take.
    assert launch("train", "--hyperparameters", str(out)) == 0
    assert aws["requests"]["CreateTrainingJob"]["HyperParameters"] == {
        "lr": "0.0123",
        "batch_size": "64",
        "unfreeze_epoch": "2",
    }
    answers["DescribeHyperParameterTuningJob"].pop("BestTrainingJob")
    answers["DescribeHyperParameterTuningJob"]["HyperParameterTuningJobStatus"] = "InProgress"
    with pytest.raises(sagemaker_jobs.LaunchError, match="has no completed trial yet"):
        sagemaker_jobs.best_of_tuning_job("bf-tune-261122-013000", REGION, out, client=client)


MLFLOW_ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/breedfilter"


def test_jobs_carry_the_mlflow_configuration_and_the_registry_step(aws: dict, capsys: Any) -> None:
    assert launch("train", "--mlflow", MLFLOW_ARN, "--register-model", "dogs") == 0
    request = aws["requests"]["CreateTrainingJob"]
    assert request["Environment"] == {"MLFLOW_TRACKING_URI": MLFLOW_ARN, "MLFLOW_EXPERIMENT_NAME": "breedfilter"}
    # train.py registers the job's model where SageMaker will put it ({job_name} is filled in by the job).
    assert request["HyperParameters"]["register_model"] == "dogs"
    assert (
        request["HyperParameters"]["model_data_url"]
        == f"s3://{BUCKET}/breedfilter/jobs/{{job_name}}/output/model.tar.gz"
    )
    opts = units.train_options().parse_options(
        ["--data", "d", *(f"--{k.replace('_', '-')}={v}" for k, v in request["HyperParameters"].items())], env={}
    )
    assert (opts.register_model, opts.model_data_url) == ("dogs", request["HyperParameters"]["model_data_url"])
    # A tuning job's trials share one experiment: the tuning job's name (each run is named after its job).
    assert launch("tune", "--mlflow", MLFLOW_ARN, "--max-jobs", "2") == 0
    tuning = aws["requests"]["CreateHyperParameterTuningJob"]
    environment = tuning["TrainingJobDefinition"]["Environment"]
    assert environment == {
        "MLFLOW_TRACKING_URI": MLFLOW_ARN,
        "MLFLOW_EXPERIMENT_NAME": tuning["HyperParameterTuningJobName"],
    }
    # Without --mlflow (and no MLFLOW_TRACKING_URI), each job keeps an embedded store in its output.
    assert launch("train") == 0
    assert aws["requests"]["CreateTrainingJob"]["Environment"] == {"MLFLOW_EXPERIMENT_NAME": "breedfilter"}
    assert "register_model" not in aws["requests"]["CreateTrainingJob"]["HyperParameters"]
    # A store on this machine is out of a job's reach: said before anything starts.
    with pytest.raises(SystemExit):
        launch("train", "--mlflow", "sqlite:///out/train/output/mlflow.db")
    assert "--mlflow: a SageMaker job cannot reach sqlite:///out/train/output/mlflow.db" in capsys.readouterr().err


def test_a_flag_given_to_the_tuner_is_fixed_not_searched(aws: dict, capsys: Any) -> None:
    assert launch("tune", "--batch", "64", "--spot") == 0, capsys.readouterr().err  # abbreviated, as argparse allows
    request = aws["requests"]["CreateHyperParameterTuningJob"]
    sent = search_space.from_sagemaker(request["HyperParameterTuningJobConfig"]["ParameterRanges"])
    assert sent == search_space.load().without(["batch_size"]).canonical()
    definition = request["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"]["batch_size"] == "64"
    assert definition["EnableManagedSpotTraining"] is True
    assert "CheckpointConfig" not in definition  # one prefix for all trials: an interrupted spot trial starts over


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/local/dir"], "--data must be s3://BUCKET/PREFIX"),
        (["--data", DATA, "--learning-rate", "0.1"], "unrecognized arguments: --learning-rate 0.1"),
        (["--data", DATA, "--model-dir", "/tmp/m"], "--model-dir is set by SageMaker"),
        (["--data", DATA, "--epochs"], "argument --epochs: expected one argument"),
        (["--data", DATA, "--epochs", "abc"], "argument --epochs: invalid positive_int value: 'abc'"),
        (["--data", DATA, "--optimizer", "adamx"], "argument --optimizer: invalid choice: 'adamx'"),
        (["--data", DATA, "stray"], "unrecognized arguments: stray"),
        (["--data", DATA, "--job-name-prefix", "breedfilter_dogs"], "--job-name-prefix: letters, digits"),
        (["--data", DATA, "--instance-count", "0"], "--instance-count must be at least 1"),
        (["--data", DATA, "--output", "/tmp/out"], "--output must be an s3:// URI"),
    ],
)
def test_bad_arguments_stop_before_any_request(aws: dict, capsys: Any, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not aws["requests"]


def test_a_space_with_everything_fixed_is_refused(aws: dict, capsys: Any) -> None:
    flags = ["--lr", "0.01", "--batch-size", "32", "--weight-decay", "0.01", "--label-smoothing", "0"]
    assert launch("tune", *flags, "--unfreeze-epoch", "1") == 2
    assert "nothing left to tune" in capsys.readouterr().err
    assert "CreateHyperParameterTuningJob" not in aws["requests"]


def test_no_credentials_is_one_clear_line(
    aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert launch("train") == 1
    err = capsys.readouterr().err
    assert "error: no AWS credentials found: configure credentials with `aws configure`" in err
    assert "Traceback" not in err


def test_split_folders_are_read_as_train_py_reads_them(aws: dict, capsys: Any) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    for split in ("valid", "test"):
        s3.delete_object(Bucket=BUCKET, Key=f"datasets/dogs/{split}/001.Beagle/1.jpg")
    s3.put_object(Bucket=BUCKET, Key="datasets/dogs/Val/001.Beagle/1.jpg", Body=b"jpeg")
    assert launch("train") == 0, capsys.readouterr().err  # Val/ is valid/, and test/ is optional


def test_wait_reports_a_failed_job_after_printing_where_it_is(
    aws: dict, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    original = sagemaker_jobs.sagemaker_session

    def failing(region: str | None, output: str) -> Any:
        session = original(region, output)

        def answer(model: Any, params: dict[str, Any], **_: Any) -> Any:
            name = json.loads(params["body"])["TrainingJobName"]
            failed = {
                "TrainingJobName": name,
                "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
                "TrainingJobStatus": "Failed",
                "SecondaryStatus": "Failed",
                "FailureReason": "AlgorithmError: train.py exited with 2",
                "AlgorithmSpecification": {"TrainingInputMode": "File"},
                "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                "CreationTime": "2026-11-22T01:00:00Z",
                "ModelArtifacts": {"S3ModelArtifacts": ""},
            }
            return AWSResponse("", 200, {}, None), failed

        session.boto_session.events.register("before-call.sagemaker.DescribeTrainingJob", answer)
        return session

    monkeypatch.setattr(sagemaker_jobs, "sagemaker_session", failing)
    assert launch("train", "--wait") == 1
    captured = capsys.readouterr()
    assert "started SageMaker training job breedfilter-" in captured.out  # where it is, before the wait
    assert "did not complete" in captured.err and "AlgorithmError: train.py exited with 2" in captured.err
    assert "Traceback" not in captured.err


def test_missing_data_is_caught_before_the_job_starts(aws: dict, capsys: Any) -> None:
    assert cli.main(["train", "--data", "s3://no-such-bucket-anywhere/data", "--role", ROLE]) == 2
    assert "bucket no-such-bucket-anywhere does not exist" in capsys.readouterr().err
    boto3.client("s3", region_name=REGION).delete_object(Bucket=BUCKET, Key="datasets/dogs/valid/001.Beagle/1.jpg")
    assert launch("tune") == 2
    err = capsys.readouterr().err
    assert f"no valid/ under {DATA}/" in err and f"breedfilter data upload DIR {DATA}/" in err
    assert not aws["requests"]


def test_an_aws_refusal_is_reported_with_what_to_do(aws: dict, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """A new account's GPU quota is 0: SageMaker refuses CreateTrainingJob with ResourceLimitExceeded."""
    original = sagemaker_jobs.sagemaker_session

    def refusing(region: str | None, output: str) -> Any:
        session = original(region, output)
        error = {"Code": "ResourceLimitExceeded", "Message": "The account-level service limit is 0 Instances"}
        response = (AWSResponse("", 400, {}, None), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}})
        session.boto_session.events.register("before-call.sagemaker.CreateTrainingJob", lambda **_: response)
        return session

    monkeypatch.setattr(sagemaker_jobs, "sagemaker_session", refusing)
    assert launch("train", "--spot") == 1
    err = capsys.readouterr().err
    assert "error: AWS said ResourceLimitExceeded: The account-level service limit is 0 Instances" in err
    assert "Service Quotas" in err and "'ml.g4dn.xlarge for spot training job usage'" in err
    assert "Traceback" not in err


def test_the_cli_lists_its_commands(capsys: Any) -> None:
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("data upload", "tune --local", "tune --data", "train --data"):
        assert f"breedfilter {command}" in out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def _objects(prefix: str) -> list[dict[str, Any]]:
    return boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])


def _read(key: str) -> str:
    return boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()


def _template_parameters() -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load(TEMPLATE_PATH.read_text(), Loader=Loader)["Parameters"]
