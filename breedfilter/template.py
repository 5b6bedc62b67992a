"""Read template.yaml for the local twin: table keys and indexes, parameter defaults, function environments.

CloudFormation's short tags (``!Ref``, ``!Sub``, ``!If``...) load as their long forms; ``resolve`` evaluates
them against parameter defaults and local resource names. That is how the local stack and the deployed one
share their settings.

    python -m breedfilter.template      # prints the router environment and the tables as read
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from breedfilter.units import REPO_ROOT

TEMPLATE_PATH = REPO_ROOT / "template.yaml"
_PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "breedfilter-local",
    "AWS::URLSuffix": "amazonaws.com",
}


class _CfnLoader(yaml.SafeLoader):
    pass


def _construct_tag(loader: yaml.Loader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


@dataclass
class StackTemplate:
    document: dict[str, Any]

    @classmethod
    def load(cls, path: Path = TEMPLATE_PATH) -> StackTemplate:
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run from a breedfilter checkout")
        return cls(yaml.load(path.read_text(), Loader=_CfnLoader))  # noqa: S506 - SafeLoader subclass

    def parameter_default(self, name: str) -> str:
        parameter = self.document.get("Parameters", {}).get(name)
        if parameter is None:
            raise KeyError(f"template.yaml has no parameter {name}")
        return str(parameter.get("Default", ""))

    def resource(self, logical_id: str) -> dict[str, Any]:
        resource = self.document.get("Resources", {}).get(logical_id)
        if resource is None:
            raise KeyError(f"template.yaml has no resource {logical_id}")
        return resource

    def table_definition(self, logical_id: str) -> dict[str, Any]:
        """CreateTable arguments (keys, attribute types, GSIs) for a DynamoDB table in the template."""
        props = self.resource(logical_id)["Properties"]
        definition: dict[str, Any] = {
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": "PAY_PER_REQUEST",
        }
        indexes = [
            {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
            for index in props.get("GlobalSecondaryIndexes", [])
        ]
        if indexes:
            definition["GlobalSecondaryIndexes"] = indexes
        return definition

    def function_environment(self, logical_id: str, resources: dict[str, str]) -> dict[str, str]:
        """A function's environment variables (SAM Globals merged in), resolved for local resources."""
        globals_env = self.document.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        own = self.resource(logical_id)["Properties"].get("Environment", {}).get("Variables", {})
        return {key: str(self.resolve(value, resources)) for key, value in {**globals_env, **own}.items()}

    def resolve(self, value: Any, resources: dict[str, str]) -> Any:
        """Evaluate intrinsic functions with parameter defaults; resources by local name."""
        if isinstance(value, list):
            return [self.resolve(v, resources) for v in value]
        if not isinstance(value, dict) or len(value) != 1:
            return value
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return self._ref(arg, resources)
        if fn == "Fn::GetAtt":
            return resources.get(arg[0], arg[0])
        if fn == "Fn::If":
            condition, then, otherwise = arg
            return self.resolve(then if self.condition(condition, resources) else otherwise, resources)
        if fn == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            return re.sub(
                r"\$\{([^}!]+)\}",
                lambda m: str(self.resolve(extra[m[1]], resources) if m[1] in extra else self._ref(m[1], resources)),
                text,
            )
        if fn == "Fn::Join":
            return str(arg[0]).join(str(self.resolve(v, resources)) for v in arg[1])
        if fn == "Fn::FindInMap":
            name, first, second = (self.resolve(v, resources) for v in arg)
            return self.document["Mappings"][name][str(first)][str(second)]
        return value

    def condition(self, name_or_expr: Any, resources: dict[str, str]) -> bool:
        expr = self.document["Conditions"][name_or_expr] if isinstance(name_or_expr, str) else name_or_expr
        ((fn, arg),) = expr.items()
        if fn == "Fn::Equals":
            left, right = (self.resolve(v, resources) for v in arg)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not self.condition(arg[0], resources)
        if fn == "Fn::And":
            return all(self.condition(a, resources) for a in arg)
        if fn == "Fn::Or":
            return any(self.condition(a, resources) for a in arg)
        if fn in ("Condition", "Fn::Condition"):
            return self.condition(arg, resources)
        raise ValueError(f"unsupported condition {fn}")

    def _ref(self, name: str, resources: dict[str, str]) -> Any:
        if name in resources:
            return resources[name]
        if name in _PSEUDO:
            return _PSEUDO[name]
        if name in self.document.get("Parameters", {}):
            return self.parameter_default(name)
        if name.split(".")[0] in resources:  # ${Resource.Attr} inside Fn::Sub
            return resources[name.split(".")[0]]
        return name


if __name__ == "__main__":
    template = StackTemplate.load()
    local = {
        "SortedBucket": "sorted",
        "ResultsTable": "results",
        "IdempotencyTable": "idem",
        "Endpoint": "ep",
    }
    print(json.dumps(template.function_environment("RouterFunction", local), indent=2))
    print(json.dumps(template.table_definition("ResultsTable"), indent=2))
