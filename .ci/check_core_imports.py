"""Import rules that keep the architecture honest:
- merge_core imports no web, queue, Hub or object-store code (the library stands on its own);
- jobs (the contract shared by API and workers) imports no torch and no web framework;
- app (the API) never imports the worker package, and the worker never imports the app;
- loramerge_client (the HTTP client) imports no torch, library or service code: only the webhook
  signature check it shares with the server (jobs.webhook_signing, standard library only);
- support (factories, stand-ins, the process stack, references) imports neither tests nor reliability,
  and reliability and benchmarks never import tests: all three share support/ instead."""

import ast
import pathlib
import sys

RULES = {
    "merge_core": {"fastapi", "celery", "redis", "huggingface_hub", "app", "worker", "jobs", "starlette", "uvicorn", "boto3"},
    "jobs": {"torch", "fastapi", "starlette", "app", "worker", "huggingface_hub", "boto3"},
    "app": {"worker", "huggingface_hub", "boto3"},
    "worker": {"app", "fastapi", "starlette"},
    "loramerge_client": {"torch", "merge_core", "celery", "redis", "jobs", "app", "worker", "fastapi", "pydantic"},
    "support": {"tests", "reliability", "benchmarks"},
    "reliability": {"tests"},
    "benchmarks": {"tests"},
}
ALLOWED = {"loramerge_client": {"jobs.webhook_signing"}}  # exact modules a package may import despite RULES


def imported(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def main() -> int:
    bad = []
    for package, forbidden in RULES.items():
        for path in sorted(pathlib.Path(package).rglob("*.py")):
            bad += [
                f"{path}:{line}: imports {name}"
                for line, name in imported(path)
                if name.split(".")[0] in forbidden and name not in ALLOWED.get(package, ())
            ]
    print("\n".join(bad) or "import rules: clean")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
