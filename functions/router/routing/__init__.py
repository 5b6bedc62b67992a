"""The router's parts: settings, event parsing, sniffing, the endpoint call, results, the pipeline.

Imported by ``app.py`` (the Lambda entry point), by the local twin and by the tests.
"""
