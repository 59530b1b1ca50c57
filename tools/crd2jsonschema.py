#!/usr/bin/env python3
"""Convert a CustomResourceDefinition's openAPIV3Schema into strict JSON schemas that
kubeconform reads with -schema-location '<dir>/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json'.

Same rules as kubeconform's scripts/openapi2jsonschema.py in strict mode: every object
with `properties` gets `additionalProperties: false` (unless it carries
x-kubernetes-preserve-unknown-fields), x-kubernetes-int-or-string becomes
string-or-integer, and descriptions are dropped to keep the files small.

usage: crd2jsonschema.py CRD.yaml OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def convert(node):
    if isinstance(node, list):
        return [convert(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: convert(v) for k, v in node.items() if k != "description"}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    for key in [k for k in out if k.startswith("x-kubernetes-")]:
        out.pop(key)
    if "properties" in out and not preserve and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def main(crd_path: str, out_dir: str) -> None:
    for crd in yaml.safe_load_all(Path(crd_path).read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"].lower()
        for version in crd["spec"]["versions"]:
            schema = convert(version["schema"]["openAPIV3Schema"])
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            target = Path(out_dir) / group / f"{kind}_{version['name']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(f"{target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
