"""The ``breedfilter`` command: one entry point for the project's jobs.

    breedfilter demo [--data DIR|--model F]            the whole loop offline: train, serve, route, summarise
    breedfilter local up|down|env|status               keep the local twin running; route with aws s3 cp
    breedfilter data upload DIR s3://BUCKET/PREFIX     upload an ImageFolder dataset (skips unchanged files)
    breedfilter tune --local --data DIR [...]          tune train.py here with Optuna (leaderboard, plot, best flags)
    breedfilter tune --data s3://... --role ARN [...]  a SageMaker hyperparameter tuning job
    breedfilter tune --best TUNING_JOB                 its best trial's flags -> best_hyperparameters.json
    breedfilter train --data s3://... --role ARN [...] a SageMaker training job (locally: python training/train.py)
    breedfilter model approved|versions [--name NAME]  the model registry: the approved version's sam deploy line
    breedfilter predict IMAGE... [--model F|--endpoint N] classify files with an artifact or an endpoint
    breedfilter results --label L|--status S|--source URI|--counts   query the results table
    breedfilter report RUN_DIR|s3://... [--regenerate] [--open]  a training run's summary and HTML report
    breedfilter reconcile [--older-than MIN] [--max N] [--dry-run]  route inbox objects no notification routed
    breedfilter backfill s3://BUCKET/PREFIX [--rate N] [--dry-run]  send existing objects through the router
    breedfilter redrive [--max N]                      move dead-lettered messages back to the inbox queue
    breedfilter review [--stack NAME]                  the review page: confirm, correct or reject images
    breedfilter review apply SOURCE LABEL|--reject     a person's decision on one image: the copy moves, once
    breedfilter dataset export --out DIR|s3://...      human-confirmed images as an ImageFolder (+ a manifest)
    breedfilter status [--stack NAME] [--since MIN]    one screen of health: alarms, queues, waiting, decisions

Each subcommand has --help.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = __doc__.split("\n\n")[1].rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(f"usage: breedfilter COMMAND ...\n\n{USAGE}\n\nEach command has --help.")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "data":
        if not rest or rest[0] != "upload":
            print("usage: breedfilter data upload DIR s3://BUCKET/PREFIX [--dry-run] [--workers N]", file=sys.stderr)
            return 2
        from breedfilter import data_upload

        return data_upload.main(rest[1:])
    if command == "tune":
        if rest[:1] == ["--best"]:
            from breedfilter import sagemaker_jobs

            return sagemaker_jobs.best_main(rest[1:])
        if "--local" in rest:
            from breedfilter import tune_local

            return tune_local.main([a for a in rest if a != "--local"])
        from breedfilter import sagemaker_jobs

        return sagemaker_jobs.main("tuning", rest)
    if command == "train":
        from breedfilter import sagemaker_jobs

        return sagemaker_jobs.main("training", rest)
    if command == "model":
        from breedfilter import model_registry_cli

        return model_registry_cli.main(rest)
    if command == "demo":
        from breedfilter import demo

        return demo.main(rest)
    if command == "local":
        from breedfilter import local_cli

        return local_cli.main(rest)
    if command == "results":
        from breedfilter import results

        return results.main(rest)
    if command == "report":
        from breedfilter import report_cli

        return report_cli.main(rest)
    if command == "review":
        if rest[:1] == ["apply"]:
            from breedfilter import review_cli

            return review_cli.main(rest)
        from breedfilter import review_server

        return review_server.main(rest)
    if command == "dataset":
        if not rest or rest[0] != "export":
            print("usage: breedfilter dataset export --out DIR|s3://BUCKET/PREFIX [...]", file=sys.stderr)
            return 2
        from breedfilter import dataset_export

        return dataset_export.main(rest[1:])
    if command == "reconcile":
        from breedfilter import reconcile_cli

        return reconcile_cli.main(rest)
    if command == "backfill":
        from breedfilter import backfill

        return backfill.main(rest)
    if command == "redrive":
        from breedfilter import redrive

        return redrive.main(rest)
    if command == "status":
        from breedfilter import status_cli

        return status_cli.main(rest)
    if command == "predict":
        from breedfilter import predict

        return predict.main(rest)
    print(f"breedfilter: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
