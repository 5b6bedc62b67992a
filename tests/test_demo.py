"""`make demo` end to end (smaller): every object ends in one place with one item, the bad ones rejected."""

from __future__ import annotations

import json
import os

from breedfilter import demo


def test_demo_routes_everything_once_and_cleans_up(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "OUT_DIR", tmp_path)
    before = dict(os.environ)
    summary = demo.run(per_label=2, verbose=False)
    assert dict(os.environ) == before  # nothing left pointing at the stopped servers

    assert summary["objects"] == summary["items"] == 11
    assert summary["one_copy_each"] is True
    assert summary["inbox_left"] == [] and summary["dlq_depth"] == 0
    reasons = {key.split("/")[-1]: reason for key, reason, _ in summary["rejected"]}
    assert reasons == {
        "notes.jpg": "not_an_image",
        "truncated.jpg": "model_rejected",
        "empty.png": "empty",
        "phone photo.heic": "unsupported_format",
    }
    assert summary["accuracy_sorted"] == 1.0

    exported = json.loads((tmp_path / "results.json").read_text())
    assert len(exported) == 11
    copies = [p for p in (tmp_path / "sorted").rglob("*") if p.is_file()]
    assert len(copies) == 11
    assert (tmp_path / "sorted" / "rejected" / "uploads" / "notes.jpg").exists()

    printed = capsys.readouterr().out
    assert "all local servers stopped" in printed and "exactly one sorted copy" in printed
    assert '{"_aws"' not in printed  # the router's EMF lines stay out of the summary
