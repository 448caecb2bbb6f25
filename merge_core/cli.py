"""``loramerge``: merge adapters from a JSON job spec, list methods. One clear line on bad input."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from merge_core.errors import InvalidSpecError, MergeError
from merge_core.spec import MergeSpec, parse_spec

# The HTTP API's request adds these to the spec (jobs.request); the CLI writes to --out and would ignore them.
SERVICE_OUTPUT_FIELDS = ("destination", "private")


def _progress_bar():
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    units = {"load": "adapter", "orthogonalize": "step"}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None or done < bar.n or total != bar.total:  # a stage that restarts: orthogonalize, once per batch
            if bar is not None:
                bar.close()
            transient = stage == "orthogonalize"
            bar = bars[stage] = tqdm(
                total=total, desc=stage, unit=units.get(stage, "module"), leave=not transient, file=sys.stderr
            )
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def cmd_merge(args: argparse.Namespace) -> int:
    from merge_core.pipeline import run_merge

    if args.spec.endswith((".yml", ".yaml")):
        spec = _mergekit_spec(args)
    else:
        if args.adapter or args.rank is not None:
            raise InvalidSpecError(
                "--adapter and --rank apply to mergekit YAML files; a JSON spec sets output.kind and output.rank"
            )
        try:
            raw = json.loads(Path(args.spec).read_text())
        except FileNotFoundError:
            raise MergeError(f"spec file {args.spec!r} not found") from None
        except json.JSONDecodeError as exc:
            raise MergeError(f"spec file {args.spec!r} is not valid JSON: {exc}") from None
        spec = _library_spec(raw)
    outcome = run_merge(
        spec,
        args.out,
        allow_pickle=args.allow_pickle,
        device=args.device,
        progress=None if args.quiet else _progress_bar(),
    )
    print(
        json.dumps(
            {
                "out": str(outcome.out_dir),
                "files": outcome.files,
                "elapsed_s": round(outcome.elapsed_s, 3),
                "summary": outcome.summary,
            },
            indent=2,
        )
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """OSRM initialisation: one PEFT adapter folder per task (``merge_core.osrm``)."""
    from pydantic import ValidationError

    from merge_core.osrm import parse_jsonl, run_init
    from merge_core.osrm.spec import InitSpec
    from merge_core.spec import format_validation_error

    try:
        raw = json.loads(Path(args.spec).read_text())
    except FileNotFoundError:
        raise MergeError(f"spec file {args.spec!r} not found") from None
    except json.JSONDecodeError as exc:
        raise MergeError(f"spec file {args.spec!r} is not valid JSON: {exc}") from None
    try:
        spec = InitSpec.model_validate(raw)
    except ValidationError as exc:
        cause = next((e["ctx"]["error"] for e in exc.errors() if isinstance((e.get("ctx") or {}).get("error"), MergeError)), None)
        if cause is not None:
            raise cause from None
        raise InvalidSpecError(format_validation_error(exc)) from None
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise InvalidSpecError(f"output folder {args.out!r} is not empty")
    files = {}
    for task in spec.tasks:
        if task.file is not None:
            try:
                data = Path(task.file).expanduser().read_bytes()
            except OSError as exc:
                raise MergeError(f"task {task.name!r}: cannot read {task.file!r}: {exc.strerror or exc}") from None
            files[task.name] = parse_jsonl(data, task, spec.params.samples_per_task)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    outcome = run_init(
        spec,
        out,
        base_model_dir=Path(spec.base_model).expanduser(),
        files=files,
        device=device,
        progress=None if args.quiet else _progress_bar(),
    )
    result = {"out": str(outcome.out_dir), "tasks": outcome.tasks, "elapsed_s": round(outcome.elapsed_s, 3)}
    print(json.dumps({**result, "summary": outcome.summary}, indent=2))
    return 0


def _mergekit_spec(args: argparse.Namespace) -> MergeSpec:
    """A mergekit configuration file: a merged model as mergekit writes it, or with --adapter a LoRA adapter."""
    from merge_core.mergekit import MAX_YAML_BYTES, mergekit_to_spec

    path = Path(args.spec)
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise MergeError(f"mergekit configuration {args.spec!r} not found") from None
    raw = mergekit_to_spec(text, check_local=True)
    if args.adapter or args.rank is not None:
        raw["output"] = {**raw["output"], "kind": "adapter", "rank": args.rank}
    return _library_spec(raw)


def _library_spec(raw: object) -> MergeSpec:
    """The spec, refusing the service's fields by name rather than as unknown ones."""
    output = raw.get("output") if isinstance(raw, dict) else None
    service = [f"output.{name}" for name in SERVICE_OUTPUT_FIELDS if isinstance(output, dict) and name in output]
    if service:
        raise InvalidSpecError(
            f"{', '.join(service)}: service fields (where the HTTP API publishes its result); the CLI writes to --out, "
            "remove them from the spec",
            fields=service,
        )
    return parse_spec(raw)


def cmd_methods(args: argparse.Namespace) -> int:
    from merge_core.registry import list_methods

    methods = [m.describe() for m in list_methods()]
    if args.json:
        print(json.dumps(methods, indent=2))
        return 0
    for m in methods:
        print(f"{m['name']:16} {m['summary']}")
        for pname, schema in m["params_schema"].get("properties", {}).items():
            default = schema.get("default")
            # Literal parameters show their choices, not "string"; a number or a choice (scaling) shows both
            options = schema.get("anyOf") or [schema]
            kinds = [str(v) for o in options for v in (o.get("enum") or [o.get("type") or "value"])]
            auto = f" Here 'auto' is {m['auto_scaling']} ({m['auto_scaling_causal_lm']} for task_type CAUSAL_LM adapters)."
            here = auto if pname == "scaling" else ""
            print(f"    {pname:15} {'|'.join(kinds):8} default={default!r:8} {schema.get('description', '')}{here}")
    return 0


def build_parser(add_commands: Callable | None = None) -> argparse.ArgumentParser:
    """``add_commands(subparsers)`` lets the service add ``serve`` without merge_core importing it."""
    parser = argparse.ArgumentParser(prog="loramerge", description="Merge LoRA adapters (DO-Merging and baselines).")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge the adapters named in a JSON job spec")
    merge.add_argument(
        "spec",
        help="job spec JSON file (the HTTP API's body less output.destination, output.private), or a mergekit "
        "configuration (.yml/.yaml: linear, task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties)",
    )
    merge.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    merge.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    merge.add_argument(
        "--allow-pickle", action="store_true", help="read pickle adapter_model.bin (runs code: trusted files only)"
    )
    merge.add_argument("--quiet", action="store_true", help="no progress bars")
    merge.add_argument(
        "--adapter",
        action="store_true",
        help="mergekit YAML: write a LoRA adapter instead of a merged model (exact when factored)",
    )
    merge.add_argument("--rank", type=int, default=None, help="mergekit YAML: the adapter's rank (needed by dense methods)")
    merge.set_defaults(func=cmd_merge)
    init = sub.add_parser("init", help="OSRM: merge-ready LoRA initialisations, one PEFT adapter per task (docs/METHOD.md)")
    init.add_argument("spec", help="init spec JSON file (the body of POST /v1/inits less output and notify)")
    init.add_argument("out", help="output folder (must not exist or be empty); one sub-folder per task")
    init.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    init.add_argument("--quiet", action="store_true", help="no progress bars")
    init.set_defaults(func=cmd_init)
    methods = sub.add_parser("methods", help="list merge methods and their parameters")
    methods.add_argument("--json", action="store_true", help="machine-readable output with JSON schemas")
    methods.set_defaults(func=cmd_methods)
    if add_commands is not None:
        add_commands(sub)
    return parser


def main(argv: list[str] | None = None, add_commands: Callable | None = None) -> int:
    args = build_parser(add_commands).parse_args(argv)
    try:
        return args.func(args)
    except MergeError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error [cancelled]: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
