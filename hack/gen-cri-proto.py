#!/usr/bin/env python3
"""Writes cri-proto/proto/api.proto from the CRI v1 wire contract table.

Usage: hack/gen-cri-proto.py ../shared/cri/cri-v1-wire.tsv > cri-proto/proto/api.proto
The result is committed; cri-proto's wire test checks it against the table.
"""
import sys
from collections import OrderedDict

PKG = "runtime.v1"
rpcs = OrderedDict()
messages = OrderedDict()   # full name -> {"map": bool, "fields": [...]}
enums = OrderedDict()      # full name -> [(name, number)]

for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    cols = line.rstrip("\n").split("\t")
    kind = cols[0]
    if kind == "rpc":
        rpcs.setdefault(cols[1], []).append(cols[2:6])
    elif kind == "message":
        messages[cols[1]] = {"map": len(cols) > 2 and cols[2] == "map-entry", "fields": []}
    elif kind == "field":
        cols += [""] * (9 - len(cols))
        messages[cols[1]]["fields"].append(cols[2:9])
    elif kind == "enum":
        enums.setdefault(cols[1], []).append((cols[2], cols[3]))


def short(full):
    return full[len(PKG) + 1:] if full.startswith(PKG + ".") else full


def rel(full, scope):
    """Type name relative to the package (nested names keep their parent)."""
    return short(full.lstrip("."))


def ftype(f):
    _, _, _, typ, type_name, _, _ = f
    if typ in ("message", "enum"):
        t = type_name.lstrip(".")
        if messages.get(t, {}).get("map"):
            kv = {x[0]: x for x in messages[t]["fields"]}
            return "map<%s, %s>" % (ftype(kv["key"]), ftype(kv["value"]))
        return short(t)
    return typ


def emit_enum(full, indent):
    out = ["%senum %s {" % (indent, full.split(".")[-1])]
    for name, num in enums[full]:
        out.append("%s    %s = %s;" % (indent, name, num))
    out.append(indent + "}")
    return out


def emit_message(full, indent=""):
    name = full.split(".")[-1]
    out = ["%smessage %s {" % (indent, name)]
    for e in enums:
        if e.rsplit(".", 1)[0] == full:
            out += emit_enum(e, indent + "    ")
    for fname, num, label, typ, type_name, oneof, redact in messages[full]["fields"]:
        t = ftype([fname, num, label, typ, type_name, oneof, redact])
        lab = "repeated " if label == "repeated" and not t.startswith("map<") else ""
        opts = " [debug_redact = true]" if redact else ""
        out.append("%s    %s%s %s = %s%s;" % (indent, lab, t, fname, num, opts))
    out.append(indent + "}")
    return out


out = [
    "// CRI v1: the Kubernetes Container Runtime Interface, package runtime.v1.",
    "// Field numbers, types and enum values follow the upstream wire contract",
    "// (shared/cri/cri-v1-wire.tsv); cri-proto's wire test keeps them in step.",
    'syntax = "proto3";',
    "",
    "package runtime.v1;",
    "",
    'option go_package = "k8s.io/cri-api/pkg/apis/runtime/v1";',
    "",
]
for svc, methods in rpcs.items():
    out.append("service %s {" % svc)
    for method, req, resp, stream in methods:
        s = "stream " if stream == "server-stream" else ""
        c = "stream " if stream == "client-stream" else ""
        out.append("    rpc %s(%s%s) returns (%s%s) {}" % (method, c, short(req), s, short(resp)))
    out.append("}")
    out.append("")
for e in enums:
    if e.count(".") == 2:
        out += emit_enum(e, "")
        out.append("")
for m, info in messages.items():
    if info["map"] or m.count(".") != 2:
        continue
    out += emit_message(m)
    out.append("")
print("\n".join(out).rstrip() + "\n", end="")
