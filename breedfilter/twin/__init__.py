"""The local twin of the cloud stack: the same router and model code, on one machine, offline.

local_twin.py        LocalTwin: moto + the endpoint + the router, wired from template.yaml
local_aws.py         moto's server, the stack provisioned from template.yaml, S3 notifications as S3 sends them
moto_s3_conditions.py  conditional CopyObject (If-None-Match) that moto lacks
sqs_poller.py        Lambda's SQS event source: batches, partial failures, visibility timeout, DLQ
lambda_runtime.py    a Lambda context object and ``module.function`` loading
endpoint_server.py   a local SageMaker endpoint (container contract and the runtime path boto3 calls)
predictor.py         the contract between that server and the models: Predictor and the errors it raises
artifact_model.py    a trained model.tar.gz served through training/inference.py
stand_in_model.py    the colour stand-in the router's tests use

breedfilter local up        # runs it; see README "Run it locally"
"""
