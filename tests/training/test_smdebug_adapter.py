"""The optional smdebug adapter: nothing without a SageMaker hook config, nothing (and a clear line) when smdebug
does not import, and smdebug's hook registered and fed when both are there.

smdebug 1.0.34 itself cannot run here (it fails on NumPy 2 and lacks three dependencies), so the last case uses a
stand-in module with smdebug's API surface; train.py's own run with a hook config and no smdebug is real.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types

from torch import nn

import train
from observability import smdebug_adapter
from tests.image_datasets import make_dataset
from tests.support import quick_args


def hook_config(tmp_path, monkeypatch):
    path = tmp_path / "debughookconfig.json"
    path.write_text(json.dumps({"LocalPath": str(tmp_path / "smdebug"), "HookParameters": {"save_interval": "5"}}))
    monkeypatch.setenv(smdebug_adapter.CONFIG_ENV, str(path))
    return path


def test_without_a_hook_config_there_is_no_adapter(monkeypatch, tmp_path):
    monkeypatch.setenv(smdebug_adapter.CONFIG_ENV, str(tmp_path / "absent.json"))
    assert smdebug_adapter.config_path() is None or not smdebug_adapter.DEFAULT_CONFIG.exists()
    assert smdebug_adapter.SmdebugAdapter.create(nn.Linear(2, 2)) is None


def test_a_hook_config_without_smdebug_trains_with_our_debugger_only(tmp_path, monkeypatch):
    hook_config(tmp_path, monkeypatch)
    monkeypatch.setitem(sys.modules, "smdebug", None)  # as on a machine without it: import fails
    monkeypatch.setitem(sys.modules, "smdebug.pytorch", None)
    data = make_dataset(tmp_path / "data", {"train": 8, "valid": 2}, size=40)
    flags = ("--epochs", "1", "--profiler", "off", "--report", "off")
    log = io.StringIO()  # train.py logs to stdout (not capsys: its log handler would outlive the test's stream)
    with contextlib.redirect_stdout(log):
        summary = train.main(quick_args(data, tmp_path / "run", *flags))
    assert summary["history"]
    assert "smdebug does not import" in log.getvalue()
    assert (tmp_path / "run" / "output" / "debugger.json").is_file()


def test_with_smdebug_and_a_hook_config_its_hook_is_registered_and_fed(tmp_path, monkeypatch):
    config = hook_config(tmp_path, monkeypatch)
    calls = []

    class Hook:
        @classmethod
        def create_from_json_file(cls, path):
            calls.append(("create", path))
            return cls()

        def register_module(self, module):
            calls.append(("register", type(module).__name__))

        def set_mode(self, mode):
            calls.append(("mode", mode))

        def save_scalar(self, name, value, sm_metric=False):
            calls.append(("scalar", name))

    stand_in = types.ModuleType("smdebug.pytorch")
    stand_in.Hook = Hook
    stand_in.modes = types.SimpleNamespace(TRAIN="TRAIN", EVAL="EVAL")
    package = types.ModuleType("smdebug")
    package.pytorch = stand_in
    monkeypatch.setitem(sys.modules, "smdebug", package)
    monkeypatch.setitem(sys.modules, "smdebug.pytorch", stand_in)
    data = make_dataset(tmp_path / "data", {"train": 8, "valid": 2}, size=40)
    train.main(quick_args(data, tmp_path / "run", "--epochs", "1", "--profiler", "off", "--report", "off"))
    assert calls[0] == ("create", str(config))
    assert calls[1] == ("register", "EfficientNet")
    assert calls.count(("scalar", "train_loss")) == 3  # 24 images / batch 8
    assert ("mode", "EVAL") in calls and ("scalar", "valid_loss") in calls
    calls.clear()
    train.main(quick_args(data, tmp_path / "off", "--epochs", "1", "--smdebug", "off", "--report", "off"))
    assert calls == []
