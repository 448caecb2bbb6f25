"""Fail if merge_core imports web, queue or Hub code: the library must stay usable on its own."""

import ast
import pathlib
import sys

FORBIDDEN = {"fastapi", "celery", "redis", "huggingface_hub", "app", "worker", "starlette", "uvicorn", "boto3"}


def main() -> int:
    bad = []
    for path in sorted(pathlib.Path("merge_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path}:{node.lineno}: imports {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    print("\n".join(bad) or "merge_core imports: clean")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
