"""Lints, renders and packages the charts offline with the Helm v4 engine as a
library (PyPI `helm-python-sdk`: no helm binary, no cluster).

    chart_tool.py lint CHART [--values FILE]...
    chart_tool.py render CHART --out DIR [--values FILE]... [--name N] [--namespace NS] [--skip-schema]
    chart_tool.py package CHART --out DIR

`render` checks the merged values against the chart's values.schema.json (as
`helm install` does), renders every template, and writes:
  DIR/manifests.yaml        every rendered document, for kubernetes-validate and checkov
  DIR/config/<file>         each ConfigMap data entry, verbatim (the services'
                            TOML configurations, for the Rust parse test)
`package` writes the .tgz and prints `<path> <digest>`.

Exit status: 0 on success, 1 when Helm refuses (a lint error, a schema
violation, a template `fail`), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import atexit
import pathlib
import shutil
import sys
import tempfile

import helm_python as helm
import yaml


def load_values(files: list[str]) -> dict:
    """Merges values files left to right (the later wins, key by key)."""
    merged: dict = {}
    for name in files:
        document = helm.values_from_yaml(pathlib.Path(name).read_text()) or {}
        merged = deep_merge(merged, document)
    return merged


def deep_merge(base: dict, override: dict) -> dict:
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def lint(arguments: argparse.Namespace) -> int:
    report = helm.lint(
        arguments.chart,
        load_values(arguments.values),
        strict=True,
        kube_version=arguments.kube_version,
    )
    failed = False
    for message in report.get("messages") or []:
        severity = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(message["severity"], "UNKNOWN")
        print(f"{severity} {message['path']}: {message['error']}", file=sys.stderr)
        failed |= message["severity"] >= 2
    for error in report.get("errors") or []:
        print(f"ERROR {error}", file=sys.stderr)
        failed = True
    print(f"lint {arguments.chart}: {'failed' if failed else 'ok'}")
    return 1 if failed else 0


def render(arguments: argparse.Namespace) -> int:
    if arguments.skip_schema:
        # Helm's render checks values.schema.json itself; a copy of the chart
        # without it is how the tests reach the templates' own guards.
        scratch = tempfile.mkdtemp(prefix="chart-")
        atexit.register(shutil.rmtree, scratch, True)
        copy = pathlib.Path(scratch) / pathlib.Path(arguments.chart).resolve().name
        shutil.copytree(arguments.chart, copy, ignore=shutil.ignore_patterns("values.schema.json"))
        arguments.chart = str(copy)
    chart = helm.Chart.load(arguments.chart)
    values = load_values(arguments.values)
    chart.validate_schema(chart.merge_values(values))
    manifests = chart.render(
        values, name=arguments.name, namespace=arguments.namespace, is_install=True
    )
    out = pathlib.Path(arguments.out)
    (out / "config").mkdir(parents=True, exist_ok=True)
    documents = []
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(manifests[path]):
            if document:
                documents.append(document)
    for document in documents:
        if document.get("kind") == "ConfigMap":
            for key, text in (document.get("data") or {}).items():
                (out / "config" / key).write_text(text)
    with open(out / "manifests.yaml", "w") as stream:
        yaml.safe_dump_all(documents, stream, sort_keys=False)
    kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in documents)
    print(f"render {arguments.chart}: {len(documents)} documents ({kinds})")
    return 0


def package(arguments: argparse.Namespace) -> int:
    pathlib.Path(arguments.out).mkdir(parents=True, exist_ok=True)
    archive = helm.package(arguments.chart, destination=arguments.out)
    print(archive, helm.digest(archive))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("lint", "render", "package"):
        command = commands.add_parser(name)
        command.add_argument("chart")
        command.add_argument("--values", action="append", default=[])
        command.add_argument("--out")
        command.add_argument("--name", default="rekor-witness")
        command.add_argument("--namespace", default="rekor-witness")
        command.add_argument("--kube-version", default="v1.33.0")
        command.add_argument("--skip-schema", action="store_true")
    arguments = parser.parse_args()
    try:
        return {"lint": lint, "render": render, "package": package}[arguments.command](arguments)
    except helm.HelmError as error:
        print(f"{arguments.command} {arguments.chart}: refused: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
