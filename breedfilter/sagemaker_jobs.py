"""Launch training/train.py on SageMaker (SDK v3): a training job with ModelTrainer, a tuning job with
HyperparameterTuner over training/search_space.json. Needs the optional extra: pip install -e '.[sagemaker]'.

    breedfilter train --data s3://BUCKET/datasets/dogs --role ROLE_ARN [--instance-type ml.g4dn.xlarge]
                      [--instance-count 2] [--spot] [--hyperparameters best_hyperparameters.json] [train.py flags]
    breedfilter tune  --data s3://BUCKET/datasets/dogs --role ROLE_ARN [--max-jobs 20] [--max-parallel 2]
                      [train.py flags, which stay fixed in every trial]

Flags it does not know go to train.py as hyperparameters (``--model timm/tf_efficientnet_lite0 --epochs 10``),
checked against train.py's parser first. The data prefix holds train/ valid/ test/ (``breedfilter data upload``)
and becomes the ``data`` channel (SM_CHANNEL_DATA). Outputs, code, checkpoints and TensorBoard files go under
``--output`` (default s3://DATA_BUCKET/breedfilter). It prints the job name, the console link, the artifact URI
and the ``sam deploy`` line that serves it. SDK telemetry is off.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breedfilter import metrics, search_space, units
from breedfilter.aws_hints import NO_CREDENTIALS

# The newest PyTorch DLCs the pinned SDK knows (sagemaker.core.image_uris); torch 2.x APIs train.py uses.
TRAINING_FRAMEWORK = "2.10.0"
# Serving: AWS's Ray Serve container for SageMaker (the artifact's deployment.py + config.yaml). The PyTorch
# inference images (TorchServe) stop at 2.6, out of support since 2026-06-30; artifacts still serve on them.
SERVING_FRAMEWORK, SERVING_VERSION = "ray-serve", "1.4"
# Paths SageMaker sets itself (SM_CHANNEL_*, SM_MODEL_DIR, /opt/ml/checkpoints): not hyperparameters.
SET_BY_SAGEMAKER = frozenset({"data", "train", "valid", "test", "model_dir", "output_data_dir", "checkpoint_dir"})
S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")


class LaunchError(Exception):
    """A problem the user can fix; printed as one message, no traceback."""


@dataclass(frozen=True)
class Launched:
    kind: str  # "training" or "tuning"
    name: str
    region: str
    output: str  # s3://.../breedfilter/jobs
    hyperparameters: dict[str, str]
    handle: Any = None  # the SDK's TrainingJob or HyperparameterTuner, to wait on

    def wait(self) -> None:
        if self.kind == "training":
            self.handle.wait(logs=True)
        else:
            self.handle.wait()

    @property
    def console(self) -> str:
        page = "jobs" if self.kind == "training" else "hyper-tuning-jobs"
        return f"https://{self.region}.console.aws.amazon.com/sagemaker/home?region={self.region}#/{page}/{self.name}"

    def artifact(self, job_name: str | None = None) -> str:
        return f"{self.output}/{job_name or self.name}/output/model.tar.gz"


# -- arguments --------------------------------------------------------------------------------------------
def build_parser(kind: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"breedfilter {'train' if kind == 'training' else 'tune'}",
        description=(
            "Start a SageMaker training job running training/train.py."
            if kind == "training"
            else "Start a SageMaker hyperparameter tuning job over training/search_space.json "
            "(for a local Optuna study: breedfilter tune --local)."
        ),
        epilog="Other --flags go to train.py as hyperparameters (python training/train.py --help lists them).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="s3://BUCKET/PREFIX holding train/ valid/ test/")
    parser.add_argument("--role", default=os.environ.get("BREEDFILTER_SAGEMAKER_ROLE"), help="execution role ARN")
    parser.add_argument("--region", default=None, help="AWS region (default: your profile's)")
    parser.add_argument(
        "--output", help="s3:// prefix for jobs, code, checkpoints (default s3://DATA_BUCKET/breedfilter)"
    )
    parser.add_argument("--instance-type", default="ml.g4dn.xlarge", help="ml.g4dn.xlarge: 1 T4 GPU, the cheapest")
    parser.add_argument("--volume-gb", type=int, default=30)
    parser.add_argument("--max-runtime-hours", type=float, default=24.0, help="stop a job after this long")
    parser.add_argument("--spot", action="store_true", help="managed spot training; resumes from checkpoints")
    parser.add_argument("--max-wait-hours", type=float, default=48.0, help="with --spot: runtime plus waiting")
    parser.add_argument("--framework-version", default=TRAINING_FRAMEWORK, help="PyTorch training container")
    parser.add_argument("--image-uri", help="training image (default: the PyTorch DLC for the version and instance)")
    parser.add_argument(
        "--hyperparameters", type=Path, metavar="FILE", help="JSON {flag: value}, e.g. the tuner's best"
    )
    parser.add_argument("--wait", action="store_true", help="wait for the job and stream its logs")
    parser.add_argument(
        "--mlflow",
        default=os.environ.get("MLFLOW_TRACKING_URI", "") if _remote(os.environ.get("MLFLOW_TRACKING_URI", "")) else "",
        metavar="URI|ARN",
        help="MLflow tracking server, e.g. a SageMaker managed MLflow ARN (default: MLFLOW_TRACKING_URI; none: "
        "each job keeps an embedded store in its output.tar.gz)",
    )
    parser.add_argument(
        "--mlflow-experiment",
        help="MLflow experiment (default: breedfilter; for tuning, the tuning job's name: every trial in one)",
    )
    parser.add_argument(
        "--register-model",
        metavar="NAME",
        help="register each job's model as a version of NAME when it passes train.py's gate (--gate-* flags)",
    )
    if kind == "training":
        parser.add_argument("--instance-count", type=int, default=1, help="more than 1: torchrun across instances")
        parser.add_argument("--job-name-prefix", default="breedfilter")
    else:
        parser.add_argument("--space", type=Path, default=search_space.DEFAULT_PATH, help="search space file")
        parser.add_argument("--max-jobs", type=int, default=20, help="training jobs in all")
        parser.add_argument("--max-parallel", type=int, default=2, help="training jobs at once")
        parser.add_argument("--strategy", choices=["Bayesian", "Random", "Hyperband"], default="Bayesian")
        parser.add_argument("--early-stopping", choices=["Auto", "Off"], default="Auto", help="stop hopeless jobs")
        parser.add_argument("--job-name-prefix", default="bf-tune", help="at most 18 characters (names: 32)")
    return parser


def parse(kind: str, argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = build_parser(kind)
    args, extra = parser.parse_known_args(argv)
    bucket_match = S3_URI.match(args.data)
    if not bucket_match:
        parser.error(
            f"--data must be s3://BUCKET/PREFIX (upload first: breedfilter data upload DIR s3://…), not {args.data}"
        )
    # Job names: [a-zA-Z0-9-], at most 63 characters for training and 32 for tuning, with a 14-15 character stamp.
    longest = 48 if kind == "training" else 18
    if not re.fullmatch(rf"[a-zA-Z0-9](-*[a-zA-Z0-9]){{0,{longest - 1}}}", args.job_name_prefix):
        parser.error(f"--job-name-prefix: letters, digits and inner hyphens, at most {longest} characters")
    for name in ("instance_count", "max_jobs", "max_parallel", "volume_gb"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_runtime_hours <= 0:
        parser.error("--max-runtime-hours must be positive")
    args.data = args.data.rstrip("/") + "/"
    args.output = (args.output or f"s3://{bucket_match.group(1)}/breedfilter").rstrip("/")
    if not S3_URI.match(args.output):
        parser.error(f"--output must be an s3:// URI, not {args.output}")
    if args.mlflow and not _remote(args.mlflow):
        parser.error(
            f"--mlflow: a SageMaker job cannot reach {args.mlflow}: give an MLflow server's https:// URI or a "
            "SageMaker managed MLflow ARN (without --mlflow each job keeps an embedded store in its output)"
        )
    try:
        hyperparameters = collect_hyperparameters(args.hyperparameters, extra)
    except LaunchError as exc:
        parser.error(str(exc))
    return args, {**hyperparameters, **registry_hyperparameters(args)}


def collect_hyperparameters(file: Path | None, extra: Sequence[str]) -> dict[str, str]:
    """train.py flags from a JSON file, then from the command line (which wins), checked by train.py's own parser
    (names, abbreviations, values), as the strings SageMaker passes back to it."""
    tokens: list[str] = []
    if file is not None:
        train_options = units.train_options()
        try:
            loaded = train_options.read_hyperparameter_file(file)
        except train_options.HyperparameterFileError as exc:
            raise LaunchError(str(exc)) from None
        for name, value in loaded.items():
            tokens += [f"--{str(name).removeprefix('--')}", train_options.flag_text(value)]
    try:
        given = search_space.given_train_flags([*tokens, *extra])
    except search_space.SearchSpaceError as exc:
        raise LaunchError(f"{exc} (python training/train.py --help lists them)") from None
    out: dict[str, str] = {}
    for key, value in given.items():
        if key in SET_BY_SAGEMAKER:
            flag = "--" + key.replace("_", "-")
            raise LaunchError(f"{flag} is set by SageMaker (channels and /opt/ml paths); use --data s3://…")
        out[key] = search_space.flag_text(value)
    return out


# -- SageMaker objects ------------------------------------------------------------------------------------
def sagemaker_session(region: str | None, output: str) -> Any:
    """A SageMaker session with SDK telemetry off (it would call home on every job) and the user's config kept."""
    import boto3
    from sagemaker.core.config.config import load_sagemaker_config
    from sagemaker.core.helper.session_helper import Session

    default_bucket, _, key_prefix = output.removeprefix("s3://").partition("/")
    config = load_sagemaker_config() or {}
    config.setdefault("SchemaVersion", "1.0")
    modules = config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})
    modules["TelemetryOptOut"] = True
    boto_session = boto3.Session(region_name=region)
    if not boto_session.region_name:
        raise LaunchError("no AWS region: pass --region, or set AWS_DEFAULT_REGION, or `aws configure`")
    return Session(
        boto_session=boto_session,
        default_bucket=default_bucket,
        default_bucket_prefix=key_prefix or None,  # the SDK uploads the code under it
        sagemaker_config=config,
    )


def training_image(args: argparse.Namespace, region: str) -> str:
    if args.image_uri:
        return args.image_uri
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        framework="pytorch",
        region=region,
        version=args.framework_version,
        py_version=_py_version("training", args.framework_version),
        instance_type=args.instance_type,
        image_scope="training",
    )


def inference_image(region: str, instance_type: str = "ml.m5.large") -> str:
    """The CPU Ray Serve container for the endpoint (serverless inference has no GPUs)."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        framework=SERVING_FRAMEWORK,
        region=region,
        version=SERVING_VERSION,
        instance_type=instance_type,
        image_scope="inference",
    )


def _py_version(scope: str, version: str) -> str:
    from sagemaker.core import image_uris

    config = image_uris.config_for_framework("pytorch")[scope]
    version = config.get("version_aliases", {}).get(version, version)
    return config["versions"][version]["py_versions"][-1]


def model_trainer(
    args: argparse.Namespace, hyperparameters: dict[str, str], session: Any, kind: str, run_id: str
) -> Any:
    from sagemaker.core.shapes import CheckpointConfig, MetricDefinition, OutputDataConfig, StoppingCondition, Tag
    from sagemaker.core.training.configs import Compute, SourceCode, TensorBoardOutputConfig
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    region = session.boto_region_name
    count = getattr(args, "instance_count", 1)
    stopping = {"max_runtime_in_seconds": int(args.max_runtime_hours * 3600)}
    if args.spot:
        stopping["max_wait_time_in_seconds"] = int(max(args.max_wait_hours, args.max_runtime_hours) * 3600)
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=args.role,
        base_job_name=args.job_name_prefix,
        training_image=training_image(args, region),
        source_code=SourceCode(
            source_dir=str(units.TRAINING_DIR), entry_script="train.py", requirements="requirements.txt"
        ),
        # torchrun: one process per GPU on each instance, DistributedDataParallel across them all.
        distributed=Torchrun() if kind == "training" else None,
        compute=Compute(
            instance_type=args.instance_type,
            instance_count=count,
            volume_size_in_gb=args.volume_gb,
            enable_managed_spot_training=args.spot,
        ),
        stopping_condition=StoppingCondition(**stopping),
        output_data_config=OutputDataConfig(s3_output_path=f"{args.output}/jobs"),
        # train.py checkpoints to /opt/ml/checkpoints/<job name> each epoch; SageMaker syncs that to S3 and a
        # restarted spot job resumes. One prefix per launch: SageMaker downloads the whole prefix at start.
        # Tuning trials would all share one prefix (and download each other's checkpoints): a spot trial that
        # is interrupted starts over instead.
        checkpoint_config=CheckpointConfig(s3_uri=f"{args.output}/checkpoints/{run_id}")
        if kind == "training"
        else None,
        hyperparameters=hyperparameters,
        environment=tracking_environment(args, run_id, kind),
        tags=[Tag(key="project", value="breedfilter")],
    )
    trainer = trainer.with_metric_definitions(
        [MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in metrics.definitions()]
    )
    return trainer.with_tensorboard_output_config(
        TensorBoardOutputConfig(s3_output_path=f"{args.output}/tensorboard", local_path="/opt/ml/output/tensorboard")
    )


def _remote(uri: str) -> bool:
    """A tracking URI a job in AWS can use: an MLflow server over HTTP(S), or a SageMaker managed MLflow ARN."""
    return uri.startswith(("https://", "http://", "arn:aws"))


def tracking_environment(args: argparse.Namespace, run_id: str, kind: str) -> dict[str, str]:
    """MLflow for the job's train.py: the tracking server (when given) and one experiment — for a tuning job its
    own name, so every trial lands in it (each run is named after its training job)."""
    experiment = args.mlflow_experiment or ("breedfilter" if kind == "training" else run_id)
    return {"MLFLOW_EXPERIMENT_NAME": experiment, **({"MLFLOW_TRACKING_URI": args.mlflow} if args.mlflow else {})}


def registry_hyperparameters(args: argparse.Namespace) -> dict[str, str]:
    """--register-model: the name, and where SageMaker will put each job's model.tar.gz (train.py fills in
    {job_name}), so the registered version carries its deploy line."""
    if not args.register_model:
        return {}
    return {
        "register_model": args.register_model,
        "model_data_url": f"{args.output}/jobs/{{job_name}}/output/model.tar.gz",
    }


def data_channel(args: argparse.Namespace) -> list[Any]:
    from sagemaker.core.training.configs import InputData

    return [InputData(channel_name="data", data_source=args.data)]


# -- commands ---------------------------------------------------------------------------------------------
# train.py's split names (training/options.py SPLIT_ALIASES): any case, val/validation for valid; test/ is optional.


def check_data(args: argparse.Namespace, boto_session: Any) -> None:
    """The job reads train/ and valid/ (and test/) under --data: say so now, not after provisioning, if missing."""
    from botocore.exceptions import ClientError

    bucket, _, prefix = args.data.removeprefix("s3://").partition("/")
    try:
        listed = boto_session.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
    except ClientError as exc:
        if exc.response["Error"].get("Code") == "NoSuchBucket":
            raise LaunchError(f"bucket {bucket} does not exist (--data {args.data})") from exc
        raise
    folders = [p["Prefix"][len(prefix) :].rstrip("/") for p in listed.get("CommonPrefixes", [])]
    splits = {units.train_options().SPLIT_ALIASES.get(name.lower(), name.lower()) for name in folders}
    missing = [f"{split}/" for split in ("train", "valid") if split not in splits]
    if missing:
        raise LaunchError(
            f"no {' or '.join(missing)} under {args.data} (found: {', '.join(folders) or 'nothing'}): the job reads "
            f"train/ valid/ test/ from there. Upload the dataset first: breedfilter data upload DIR {args.data}"
        )


def start_training(args: argparse.Namespace, hyperparameters: dict[str, str]) -> Launched:
    session = sagemaker_session(args.region, args.output)
    check_data(args, session.boto_session)
    run_id = f"{args.job_name_prefix}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    trainer = model_trainer(args, hyperparameters, session, "training", run_id)
    trainer.train(input_data_config=data_channel(args), wait=False, logs=False)
    job = trainer._latest_training_job  # the SDK's own handle on the job
    name = job.training_job_name
    return Launched("training", name, session.boto_region_name, f"{args.output}/jobs", hyperparameters, job)


def start_tuning(args: argparse.Namespace, hyperparameters: dict[str, str]) -> Launched:
    from sagemaker.train.tuner import HyperparameterTuner

    space = search_space.load(args.space)
    fixed = [name for name in space.names if name in hyperparameters]
    space = space.without(fixed)
    if not space.parameters:
        raise LaunchError(f"nothing left to tune: every parameter of {args.space} is fixed on the command line")
    session = sagemaker_session(args.region, args.output)
    check_data(args, session.boto_session)
    name = f"{args.job_name_prefix}-{dt.datetime.now(dt.UTC):%y%m%d-%H%M%S}"[:32]
    trainer = model_trainer(args, hyperparameters, session, "tuning", name)
    tuner = HyperparameterTuner(
        trainer,
        objective_metric_name=space.objective,
        hyperparameter_ranges=search_space.to_sagemaker(space),
        metric_definitions=metrics.definitions(),
        strategy=args.strategy,
        objective_type="Maximize" if space.direction == "maximize" else "Minimize",
        max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel,
        early_stopping_type=args.early_stopping if args.strategy != "Hyperband" else "Off",
        tags=[{"Key": "project", "Value": "breedfilter"}],
    )
    tuner.tune(inputs=data_channel(args), job_name=name, wait=False)
    return Launched("tuning", name, session.boto_region_name, f"{args.output}/jobs", hyperparameters, tuner)


def deploy_line(artifact: str, region: str) -> str:
    overrides = {
        "NamePrefix": "breedfilter",
        "EndpointInstanceType": "serverless",
        "ModelDataUrl": artifact,
        "InferenceImageUri": inference_image(region),
    }
    return "sam deploy --parameter-overrides " + " ".join(f"{k}={shlex.quote(v)}" for k, v in overrides.items())


def report(launched: Launched, args: argparse.Namespace) -> str:
    lines = [
        f"started SageMaker {launched.kind} job {launched.name} ({launched.region})",
        f"  console:     {launched.console}",
        f"  data:        {args.data} (channel 'data')",
        f"  hyperparams: {json.dumps(launched.hyperparameters, sort_keys=True) if launched.hyperparameters else '-'}",
        f"  logs:        aws logs tail /aws/sagemaker/TrainingJobs --follow --log-stream-name-prefix {launched.name}",
    ]
    if launched.kind == "training":
        lines.append(f"  tensorboard: tensorboard --logdir {args.output}/tensorboard")
        artifact = launched.artifact()
        lines += [
            f"  status:      aws sagemaker describe-training-job --training-job-name {launched.name} "
            "--query '[TrainingJobStatus,FinalMetricDataList]'",
            f"  artifact:    {artifact} (when the job completes)",
            "serve it (after `sam build`):",
            f"  {deploy_line(artifact, launched.region)}",
        ]
    else:
        lines += [
            f"  progress:    aws sagemaker describe-hyper-parameter-tuning-job --hyper-parameter-tuning-job-name "
            f"{launched.name} --query '[HyperParameterTuningJobStatus,TrainingJobStatusCounters]'",
            f"  best trial:  breedfilter tune --best {launched.name}   # writes best_hyperparameters.json, "
            "prints its model and the sam deploy line",
        ]
    return "\n".join(lines)


def best_of_tuning_job(name: str, region: str | None, write: Path, client: Any = None) -> str:
    """The best trial of a SageMaker tuning job: its flags to a file ``train.py --hyperparameters`` and
    ``breedfilter train --hyperparameters`` take, and the line that serves its model."""
    import boto3

    client = client or boto3.Session(region_name=region).client("sagemaker")
    job = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    counts = job.get("TrainingJobStatusCounters", {})
    best = job.get("BestTrainingJob")
    if not best:
        raise LaunchError(
            f"tuning job {name} ({job['HyperParameterTuningJobStatus']}) has no completed trial yet "
            f"({counts.get('Completed', 0)} completed, {counts.get('InProgress', 0)} in progress)"
        )
    tuned = {key: _json_or_text(value) for key, value in best["TunedHyperParameters"].items()}
    write.write_text(json.dumps(tuned, indent=1) + "\n", encoding="utf-8")
    trial = client.describe_training_job(TrainingJobName=best["TrainingJobName"])
    artifact = trial.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
    objective = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
    region = client.meta.region_name
    lines = [
        f"tuning job {name}: {job['HyperParameterTuningJobStatus']}, {counts.get('Completed', 0)} trials completed",
        f"best: {best['TrainingJobName']}, {objective.get('MetricName')}={objective.get('Value')}: {json.dumps(tuned)}",
        f"wrote {write} (train.py --hyperparameters {write}; breedfilter train --hyperparameters {write})",
    ]
    if artifact:
        lines += [f"its model: {artifact}", "serve it (after `sam build`):", f"  {deploy_line(artifact, region)}"]
    return "\n".join(lines)


def _json_or_text(value: str) -> Any:
    """``"0.01"`` -> 0.01, ``'"64"'`` (JSON-quoted, as framework-mode hyperparameters may be) -> 64, text stays text."""
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            break
    return value


def best_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="breedfilter tune --best", description="Write the best hyperparameters of a SageMaker tuning job."
    )
    parser.add_argument("name", help="tuning job name (printed by breedfilter tune)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--write", type=Path, default=Path("best_hyperparameters.json"), help="where the flags go")
    args = parser.parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        print(best_of_tuning_job(args.name, args.region, args.write))
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        return aws_error(exc)
    return 0


def aws_error(exc: Exception, quota_hint: str = "") -> int:
    """One line for what AWS (or botocore) refused, no traceback; exit status 1."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        print(f"error: {NO_CREDENTIALS}", file=sys.stderr)
    elif isinstance(exc, ClientError):
        error = exc.response["Error"]
        print(f"error: AWS said {error.get('Code')}: {error.get('Message')}", file=sys.stderr)
        if error.get("Code") == "ResourceLimitExceeded" and quota_hint:
            print(quota_hint, file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)
    return 1


def main(kind: str, argv: Sequence[str] | None = None) -> int:
    args, hyperparameters = parse(kind, sys.argv[1:] if argv is None else argv)
    try:
        import sagemaker.train  # noqa: F401
    except ImportError:
        print("error: the SageMaker launcher needs the SageMaker SDK: pip install -e '.[sagemaker]'", file=sys.stderr)
        return 2
    from botocore.exceptions import BotoCoreError, ClientError
    from sagemaker.core.helper.iam_role_resolver import RoleValidationError

    if not args.wait:  # the SDK narrates at INFO; what matters is printed below (with --wait: its job logs)
        logging.getLogger("sagemaker").setLevel(logging.WARNING)

    try:
        launched = start_training(args, hyperparameters) if kind == "training" else start_tuning(args, hyperparameters)
    except (LaunchError, RoleValidationError, ValueError) as exc:  # ValueError: SearchSpaceError, unknown versions
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as exc:
        return aws_error(
            exc,
            f"  new accounts have no quota for most instance types: request one in Service Quotas (SageMaker, "
            f"'{args.instance_type} for {'spot ' if args.spot else ''}training job usage'), or pick another "
            "--instance-type",
        )
    print(report(launched, args), flush=True)
    if not args.wait:
        return 0
    from sagemaker.core.utils.exceptions import SageMakerCoreError

    try:
        launched.wait()
    except KeyboardInterrupt:
        print(f"stopped waiting; the job goes on: {launched.console}", file=sys.stderr)
        return 130
    except SageMakerCoreError as exc:
        print(f"error: {launched.kind} job {launched.name} did not complete: {exc}", file=sys.stderr)
        return 1
    done = f"{launched.kind} job {launched.name} completed"
    print(done + (f"; model: {launched.artifact()}" if launched.kind == "training" else ""))
    return 0
