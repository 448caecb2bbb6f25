import os

# Tests never touch the network: transformers and PEFT must not try the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_runtest_logreport(report):
    """Say each failure (and its reason) the moment it happens, not only in the summary at the end:
    a run stopped early, or watched on a busy machine, still shows what failed and where."""
    if not report.failed:
        return
    reporter = pytest_runtest_logreport.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    lines = report.longreprtext.rstrip().splitlines()
    reporter.write_line("")
    reporter.write_line(f"FAILED {report.nodeid} ({report.when}); the run goes on:", red=True, bold=True)
    for line in lines[-12:]:
        reporter.write_line("    " + line)


def pytest_configure(config):
    pytest_runtest_logreport.config = config
