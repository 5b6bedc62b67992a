"""A person's decision on one routed image, applied once: the sorted copy moves, the results item says so.

``apply(...)`` confirms a label (the copy moves from ``review/`` or a wrong label folder to ``<label>/``; the item
becomes ``SORTED`` with ``label_source: human``) or rejects the image ("not a dog / none of these": the copy moves
to ``rejected/``, the item becomes ``REJECTED`` with reason ``human_rejected``). The order makes it converge:
1. copy to the new name, only where the name is free (``If-None-Match: *``); a copy this source already holds
   there (a try that crashed after it) is kept, another source's sends it to its revision's own name, as the
   router names them (routing/decision.py);
2. update the item with a conditional write: only if it still points at the copy this review read and its
   ``review_revision`` is unchanged. The previous state goes to ``review_history``; who and when are recorded;
3. delete the old copy. A crash before it: the next try finds the item already decided and finishes the delete.
Two reviewers at once: one update wins; the other is told who decided what (``Conflict``) and its own new copy,
if the winner chose another place, is removed. The review page (review_server.py) and ``breedfilter review apply``
both call this.

    breedfilter review apply s3://INBOX/photos/dog.jpg Beagle [--stack NAME] [--by NAME]
    breedfilter review apply s3://INBOX/photos/cat.jpg --reject
"""

from __future__ import annotations

import difflib
import getpass
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from breedfilter import units

HUMAN = "human"
HUMAN_REJECTED = "human_rejected"
HISTORY_FIELDS = (
    "status",
    "label",
    "reason",
    "label_source",
    "destination_key",
    "top_label",
    "confidence",
    "reviewed_by",
    "reviewed_at",
    "decided_at",
)


class ReviewError(Exception):
    """The review cannot be applied: one clear line (exit status 2 on the command line)."""


class Conflict(ReviewError):
    """Another reviewer decided this image first."""


@dataclass(frozen=True)
class Outcome:
    status: str  # SORTED | REJECTED
    label: str | None
    destination_key: str
    changed: bool  # False: the image was already so decided (the call only finished what a crash left)
    item: dict[str, Any]

    def line(self, source: str) -> str:
        what = f"SORTED as {self.label}" if self.status == "SORTED" else "REJECTED"
        return f"{source}: {what} -> {self.destination_key}" + ("" if self.changed else " (already so; nothing to do)")


@dataclass
class Reviewer:
    """Where the decisions live: an S3 client, the results table (a boto3 Table) and the sorted bucket."""

    s3: Any
    table: Any
    sorted_bucket: str
    by: str = ""

    def __post_init__(self) -> None:
        self.by = self.by or getpass.getuser()
        self._decision = units.router_module("routing.decision")

    # -- finding the item ---------------------------------------------------------------------------------
    def item(self, source: str) -> dict[str, Any]:
        """The item of ``source``: its source id (``s3://BUCKET/KEY#v:…``), or ``s3://BUCKET/KEY`` when the key
        has one decided revision."""
        if "#" in source:
            found = self.table.get_item(Key={"pk": source}, ConsistentRead=True).get("Item")
            if found is None:
                raise ReviewError(f"no decision for {source} in the results table")
            return found
        bucket, _, key = source.removeprefix("s3://").partition("/")
        if not source.startswith("s3://") or not bucket or not key:
            raise ReviewError(f"{source!r} is not s3://BUCKET/KEY (the inbox object) or a source id")
        matches = []
        scan: dict[str, Any] = {
            "FilterExpression": "source_bucket = :b AND source_key = :k",
            "ExpressionAttributeValues": {":b": bucket, ":k": key},
            "ConsistentRead": True,
        }
        while True:
            page = self.table.scan(**scan)
            matches += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                break
            scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if not matches:
            raise ReviewError(f"no decision for {source} in the results table")
        if len(matches) > 1:
            ids = ", ".join(sorted(m["pk"] for m in matches))
            raise ReviewError(f"{source} has {len(matches)} decided revisions; name one: {ids}")
        return matches[0]

    # -- the decision -----------------------------------------------------------------------------------
    def apply(self, item: dict[str, Any], label: str | None, *, labels: set[str] | None = None) -> Outcome:
        """Confirm ``label`` (or reject, with ``label=None``) for the image of ``item``."""
        decision = self._decision
        if label is not None:
            label = label.strip()
            if not label:
                raise ReviewError("the label is empty")
            if labels is not None and label not in labels:
                close = difflib.get_close_matches(label, sorted(labels), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ReviewError(f"unknown label {label!r}{hint}; pass --new-label to add a label the model lacks")
        status = decision.SORTED if label is not None else decision.REJECTED
        prefix = decision.label_prefix(label) if label is not None else decision.REJECTED_PREFIX
        if _decided(item, status, label):
            self._finish_move(item)
            return Outcome(status, label, item["destination_key"], False, item)

        old_key = item["destination_key"]
        owner = self._head(old_key)
        if owner is None:
            self._raise_if_changed(item)  # another reviewer moved it away meanwhile
            raise ReviewError(
                f"s3://{self.sorted_bucket}/{old_key} is gone (deleted since it was routed): nothing to move"
            )
        metadata = owner["Metadata"]
        revision = metadata.get("breedfilter-source-revision") or item["pk"].rpartition("#")[2]
        new_key = self._place(item, old_key, prefix, revision, metadata, status, label)
        try:
            updated = self._record(item, status, label, new_key)
        except Conflict:
            self._remove_stray(item["pk"], new_key, old_key)
            raise
        if new_key != old_key:
            self._delete_if_own(old_key, revision)
        return Outcome(status, label, new_key, True, updated)

    def _place(
        self,
        item: dict[str, Any],
        old_key: str,
        prefix: str,
        revision: str,
        metadata: dict[str, str],
        status: str,
        label: str | None,
    ) -> str:
        decision = self._decision
        if old_key.split("/", 1)[0] == prefix:  # a model-SORTED image confirmed as it is: nothing moves
            return old_key
        names = (
            decision.destination_key(prefix, item["source_key"]),
            decision.destination_key(prefix, item["source_key"], revision=revision),
        )
        new_metadata = {
            **metadata,
            "breedfilter-status": status,
            "breedfilter-label": label or metadata.get("breedfilter-label", ""),
            "breedfilter-label-source": HUMAN,
        }
        if label is None:
            new_metadata["breedfilter-reason"] = HUMAN_REJECTED
        for name in names:
            try:
                self.s3.copy_object(
                    CopySource={"Bucket": self.sorted_bucket, "Key": old_key},
                    Bucket=self.sorted_bucket,
                    Key=name,
                    MetadataDirective="REPLACE",
                    Metadata={k: v for k, v in new_metadata.items() if v},
                    IfNoneMatch="*",
                )
                return name
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 412:
                    raise
            there = self._head(name)
            if there is not None and there["Metadata"].get("breedfilter-source-revision") == revision:
                return name  # this image's own copy, from a try that stopped before recording it
        raise ReviewError(f"{names[0]} and {names[1]} hold other images' copies; {item['pk']} not moved")

    def _record(self, item: dict[str, Any], status: str, label: str | None, new_key: str) -> dict[str, Any]:
        previous = {k: item[k] for k in HISTORY_FIELDS if k in item}
        revision = int(item.get("review_revision", 0))
        now = self._decision.now_iso()
        values: dict[str, Any] = {
            ":status": status,
            ":source": HUMAN,
            ":by": self.by,
            ":at": now,
            ":key": new_key,
            ":next": revision + 1,
            ":previous": [previous],
            ":empty": [],
            ":old_key": item["destination_key"],
        }
        sets = [
            "#status = :status",
            "label_source = :source",
            "reviewed_by = :by",
            "reviewed_at = :at",
            "destination_key = :key",
            "review_revision = :next",
            "review_history = list_append(if_not_exists(review_history, :empty), :previous)",
        ]
        removes = ["detail"]
        if label is not None:
            sets.append("#label = :label")
            values[":label"] = label
            removes.append("reason")
        else:
            sets.append("reason = :reason")
            values[":reason"] = HUMAN_REJECTED
            removes.append("#label")
        condition = "destination_key = :old_key AND " + (
            "review_revision = :revision" if revision else "attribute_not_exists(review_revision)"
        )
        if revision:
            values[":revision"] = revision
        try:
            answer = self.table.update_item(
                Key={"pk": item["pk"]},
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "status", "#label": "label"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            self._raise_if_changed(item)
            raise ReviewError(f"{item['pk']}: its results item is gone") from exc
        return answer["Attributes"]

    def _raise_if_changed(self, item: dict[str, Any]) -> None:
        """Conflict, saying who decided what, when the item is no longer the one this review read."""
        now_item = self.table.get_item(Key={"pk": item["pk"]}, ConsistentRead=True).get("Item")
        if now_item is None:
            return
        same = ("destination_key", "review_revision", "status", "label")
        if all(now_item.get(k) == item.get(k) for k in same):
            return
        who = now_item.get("reviewed_by", "the router")
        what = f"{now_item.get('status')}" + (f" as {now_item['label']}" if now_item.get("label") else "")
        raise Conflict(f"{item['pk']} was decided meanwhile by {who}: now {what}; reload and look again")

    def _finish_move(self, item: dict[str, Any]) -> None:
        """After a crash between the record and the delete: the previous copy still there is removed."""
        history = item.get("review_history") or []
        if history and history[-1].get("destination_key") not in (None, item["destination_key"]):
            revision = item["pk"].rpartition("#")[2]
            current = self._head(item["destination_key"])
            if current is not None:
                revision = current["Metadata"].get("breedfilter-source-revision") or revision
            self._delete_if_own(history[-1]["destination_key"], revision)

    def _remove_stray(self, pk: str, new_key: str, old_key: str) -> None:
        """The loser of a race removes the copy it made, unless the winner's item points at that same name."""
        if new_key == old_key:
            return
        now_item = self.table.get_item(Key={"pk": pk}, ConsistentRead=True).get("Item") or {}
        if now_item.get("destination_key") != new_key:
            self.s3.delete_object(Bucket=self.sorted_bucket, Key=new_key)

    def _delete_if_own(self, key: str, revision: str) -> None:
        there = self._head(key)
        if there is not None and there["Metadata"].get("breedfilter-source-revision") in (revision, None):
            self.s3.delete_object(Bucket=self.sorted_bucket, Key=key)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.s3.head_object(Bucket=self.sorted_bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise


def _decided(item: dict[str, Any], status: str, label: str | None) -> bool:
    return item.get("label_source") == HUMAN and item.get("status") == status and item.get("label") == label
