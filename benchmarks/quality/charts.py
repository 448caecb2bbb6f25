"""The quality report's charts: per-task normalized accuracy by method, and the ortho_mu trade-off."""

from __future__ import annotations

from pathlib import Path

BASE_MODELS = {"encoder": "all-MiniLM-L6-v2", "decoder": "SmolLM2-135M"}
REGIMES = {"same": "same-seed adapters", "distinct": "distinct-seed adapters"}


def charted_regime(results: dict) -> str:
    """The regime the chart shows: the same-seed one where the run has it, else the first."""
    return "same" if "same" in results["regimes"] else next(iter(results["regimes"]))


def chart_title(results: dict) -> str:
    """Names the run's base model and regime (results files from before ``model`` are the encoder's)."""
    model = BASE_MODELS[results.get("model", "encoder")]
    return f"Merged {model} LoRAs: accuracy kept per task ({REGIMES[charted_regime(results)]})"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = results["regimes"][charted_regime(results)]
    rows = sorted((r for r in data["configs"] if r["table"] == "main"), key=lambda r: -r["test_norm_mean"])
    tasks = results["tasks"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(tasks)
    for i, task in enumerate(tasks):
        ax.bar([x + i * width for x in range(len(rows))], [100 * r["test_norm"][task] for r in rows], width, label=task)
    ax.plot(
        [x + 0.4 - width / 2 for x in range(len(rows))],
        [100 * r["test_norm_mean"] for r in rows],
        "k_",
        markersize=18,
        label="mean",
    )
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], [r["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("normalized test accuracy (%)")
    ax.set_ylim(0, 110)
    ax.axhline(100, color="grey", linewidth=0.5)
    ax.legend(ncol=3, fontsize=8, loc="lower left")
    ax.set_title(chart_title(results))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mu_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["params"]["ortho_mu"])
    mus = [r["params"]["ortho_mu"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(mus, [100 * r["orthogonalized_individual"]["test_norm_mean"] for r in rows], "o-", label="each adapter alone")
    ax.plot(mus, [100 * r["test_norm_mean"] for r in rows], "s-", label="merged (DO-Merging)")
    ax.set_xscale("log")
    ax.set_xlabel("ortho_mu (weight of the ‖δ‖² penalty; smaller = more orthogonal)")
    ax.set_ylabel("mean normalized test accuracy (%)")
    ax.legend()
    ax.set_title("Orthogonalization strength vs what is kept (paper Fig. 3)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
